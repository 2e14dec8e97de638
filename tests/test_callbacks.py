"""POST /v1/callbacks/tencent: verification, validation, storage, idempotency."""

from __future__ import annotations

import json
import time

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, func, select

from recorder.app import services
from recorder.config import ConfigError, Settings
from recorder.store.db import make_sessions
from recorder.store.models import Event, Fragment
from tests.factories import KEY, record_body, sample, signed


def counts(app: Flask) -> tuple[int, int]:
    with services_of(app).sessions() as session:
        events = session.execute(select(func.count()).select_from(Event)).scalar_one()
        fragments = session.execute(select(func.count()).select_from(Fragment)).scalar_one()
    return events, fragments


def services_of(app: Flask):  # type: ignore[no-untyped-def]
    with app.app_context():
        return services()


def post(client: FlaskClient, body: object, **kwargs: object):  # type: ignore[no-untyped-def]
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post("/v1/callbacks/tencent", data=data, content_type="application/json", **kwargs)


def test_sample_recording_callback_is_stored_once(client: FlaskClient, app: Flask) -> None:
    body = record_body()
    for _ in range(3):
        answer = post(client, body)
        assert answer.status_code == 200
        assert answer.get_json() == {"code": 0}
    assert counts(app) == (1, 1)


def test_retry_with_new_t_and_sign_is_a_duplicate(client: FlaskClient, app: Flask) -> None:
    body = sample("css-record-mp4.json")
    assert post(client, signed(body, t=int(time.time()) + 500)).status_code == 200
    assert post(client, signed(body, t=int(time.time()) + 600)).status_code == 200
    assert counts(app) == (1, 1)


def test_rotated_key_is_accepted(client: FlaskClient, app: Flask) -> None:
    assert post(client, signed(sample("css-record-mp4.json"), key="old-rotated-key")).status_code == 200
    assert counts(app) == (1, 1)


def test_numbers_as_strings_are_accepted(client: FlaskClient, app: Flask) -> None:
    body = record_body(start_time="1793001600", end_time="1793003400", file_size="187654321", duration="1800")
    assert post(client, body).status_code == 200
    with services_of(app).sessions() as session:
        fragment = session.execute(select(Fragment)).scalar_one()
    assert fragment.file_size == 187654321
    assert fragment.start == pytest.approx(1793001600.12)


@pytest.mark.parametrize("name", ["css-push-start.json", "css-push-stop.json", "css-record-status.json"])
def test_other_event_types_are_stored_without_fragment(client: FlaskClient, app: Flask, name: str) -> None:
    assert post(client, signed(sample(name))).status_code == 200
    assert counts(app) == (1, 0)


@pytest.mark.parametrize("event_type", [100, "100", "0100"])
def test_event_type_is_stored_as_its_number(client: FlaskClient, app: Flask, event_type: object) -> None:
    assert post(client, record_body(event_type=event_type)).status_code == 200
    with services_of(app).sessions() as session:
        assert session.execute(select(Event.event_type)).scalar_one() == "100"
    assert counts(app) == (1, 1)


def test_unknown_event_type_is_stored_and_ignored(client: FlaskClient, app: Flask) -> None:
    assert post(client, signed({"event_type": 999, "stream_id": "x"})).status_code == 200
    assert counts(app) == (1, 0)


def test_escaped_surrogate_pair_is_one_character(client: FlaskClient, app: Flask) -> None:
    assert post(client, json.dumps(record_body(note="\U0001f600"))).status_code == 200  # sent as \ud83d\ude00
    assert counts(app) == (1, 1)


@pytest.mark.parametrize("ext", ["{not json", "[" * 30_000], ids=["not json", "deeper than json.loads goes"])
def test_callback_ext_that_is_not_json_is_kept_raw(client: FlaskClient, app: Flask, ext: str) -> None:
    assert post(client, record_body(callback_ext=ext)).status_code == 200
    with services_of(app).sessions() as session:
        event = session.execute(select(Event)).scalar_one()
        assert session.execute(select(Fragment.session_id)).scalar_one() is None
    assert json.loads(event.body)["callback_ext"] == ext


def test_whitespace_in_fields_we_only_store_does_not_refuse_a_recording(client: FlaskClient, app: Flask) -> None:
    body = record_body(stream_param="txSecret=a\tb", callback_ext='{\n  "session_id": "s1"\n}')
    assert post(client, body).status_code == 200
    assert counts(app) == (1, 1)
    with services_of(app).sessions() as session:
        assert session.execute(select(Fragment.session_id)).scalar_one() == "s1"
    assert post(client, record_body(file_id="other", stream_id="a\tb")).status_code == 400  # a column: refused


BAD_BODIES = {
    "missing stream_id": (lambda: record_body(stream_id=None), 400, "stream_id"),
    "empty stream_id": (lambda: record_body(stream_id=""), 400, "stream_id"),
    "ftp video_url": (lambda: record_body(video_url="ftp://x.myqcloud.com/a.mp4"), 400, "video_url"),
    "file video_url": (lambda: record_body(video_url="file:///etc/passwd"), 400, "video_url"),
    "unknown format": (lambda: record_body(file_format="mkv"), 400, "file_format"),
    "end before start": (lambda: record_body(end_time=1793000000), 400, "end_time"),
    "negative size": (lambda: record_body(file_size=-1), 400, "file_size"),
    "session_id with NUL": (lambda: record_body(callback_ext='{"session_id": "a\\u0000b"}'), 400, "session_id"),
    "session_id a surrogate": (lambda: record_body(callback_ext='{"session_id": "\\ud800"}'), 400, "session_id"),
    "session_id a line break": (lambda: record_body(callback_ext='{"session_id": "a\\nb"}'), 400, "session_id"),
    "event_type text": (lambda: record_body(event_type="abc"), 400, "event_type"),
    "event_type fractional": (lambda: record_body(event_type=100.7), 400, "event_type"),
    "event_type a boolean": (lambda: record_body(event_type=True), 400, "event_type"),
    "event_type with underscores": (lambda: record_body(event_type="1_0_0"), 400, "event_type"),
    "event_type infinite": (lambda: record_body(event_type=float("inf")), 400, "event_type"),
    "event_type over 9 digits": (lambda: record_body(event_type=10**40), 400, "event_type"),  # String(32)
    "event_type over 9 digits as text": (lambda: record_body(event_type="0" * 40 + "100"), 400, "event_type"),
}


@pytest.mark.parametrize("case", BAD_BODIES)
def test_bad_fields_are_400_and_store_nothing(client: FlaskClient, app: Flask, case: str) -> None:
    make, status, field = BAD_BODIES[case]
    body = {k: v for k, v in make().items() if v is not None}
    answer = post(client, body)
    assert answer.status_code == status
    error = answer.get_json()
    assert error["code"] != 0 and field in error["error"]
    assert counts(app) == (0, 0)


MALFORMED_BODIES = [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b"\xff\xfe{}", "UTF-8"),
    (b'{"event_type": 100, "event_type": 1}', "duplicate"),
    (b"", "not valid JSON"),
    (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "nested more than 32 levels"),  # beyond json's recursion
    (b'{"a":' * 40 + b"1" + b"}" * 40, "nested more than 32 levels"),
    # Lone surrogates have no UTF-8 form: the event could never be hashed or stored.
    (b'{"event_type": 999, "stream_id": "x", "extra": {"deep": ["\\ud800"]}}', "surrogate"),
    (b'{"event_type": 100, "\\udfff": 1}', "surrogate"),
]


@pytest.mark.parametrize("raw, reason", MALFORMED_BODIES)
def test_malformed_bodies_are_400(client: FlaskClient, app: Flask, raw: bytes, reason: str) -> None:
    answer = post(client, raw)
    assert answer.status_code == 400
    assert reason in answer.get_json()["error"]
    assert counts(app) == (0, 0)


# A signed body in, the same body with a bad sign or t out; and what the 401 must say.
BAD_SIGNS = {
    "sign off by one character": (
        lambda b: {**b, "sign": b["sign"][:-1] + ("0" if b["sign"][-1] != "0" else "1")},
        "does not match",
    ),
    "sign missing": (lambda b: {k: v for k, v in b.items() if k != "sign"}, "sign"),
    "sign a number": (lambda b: {**b, "sign": 12345}, "sign"),
    "sign an array": (lambda b: {**b, "sign": [b["sign"]]}, "sign"),
    "sign not ASCII": (lambda b: {**b, "sign": b["sign"][:-1] + "é"}, "32 hex digits"),
    "sign not hex": (lambda b: {**b, "sign": "z" * 32}, "32 hex digits"),
    "sign too long": (lambda b: {**b, "sign": b["sign"] + "0"}, "32 hex digits"),
    "unknown key": (lambda b: signed(b, key="wrong-key"), "does not match"),
    "t expired": (lambda b: signed(b, t=int(time.time()) - 120), "expired"),
    "t far ahead": (lambda b: signed(b, t=int(time.time()) + 3600), "future"),
    "t not a number": (lambda b: {**b, "t": "soon"}, "t "),
    "t missing": (lambda b: {k: v for k, v in b.items() if k != "t"}, "t "),
    "t a superscript digit": (lambda b: {**b, "t": "²"}, "t "),  # str.isdigit() takes it, int() does not
    "t of 5000 digits": (lambda b: {**b, "t": "1" * 5000}, "t "),
    "t a number of 4000 digits": (lambda b: {**b, "t": 10**3999}, "t "),
}


@pytest.mark.parametrize("mutate, reason", BAD_SIGNS.values(), ids=BAD_SIGNS)
def test_bad_sign_or_t_is_401(client: FlaskClient, app: Flask, mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    answer = post(client, mutate(record_body()))
    assert answer.status_code == 401
    assert reason in answer.get_json()["error"]
    assert counts(app) == (0, 0)


def test_t_within_clock_skew_is_accepted(client: FlaskClient, app: Flask) -> None:
    assert post(client, signed(sample("css-record-mp4.json"), t=int(time.time()) - 10)).status_code == 200


def test_body_over_64_kib_is_413(client: FlaskClient, app: Flask) -> None:
    body = record_body()
    body["padding"] = ""
    size = len(json.dumps(body).encode())
    body["padding"] = "x" * (64 * 1024 - size + 1)
    assert len(json.dumps(body).encode()) == 64 * 1024 + 1
    answer = post(client, body)
    assert answer.status_code == 413
    assert answer.get_json()["code"] != 0
    body["padding"] = "x" * (64 * 1024 - size)
    assert post(client, body).status_code == 200


def test_database_down_is_503_then_replay_stores_once(client: FlaskClient, app: Flask) -> None:
    svc = services_of(app)
    working = svc.callbacks.sessions
    # A database that cannot be opened: a file path below a regular file.
    svc.callbacks.sessions = make_sessions(create_engine(f"sqlite:///{svc.settings.work_dir}/../recorder.db/x.db"))
    body = record_body()
    answer = post(client, body)
    assert answer.status_code == 503
    assert "cannot store" in answer.get_json()["error"]
    svc.callbacks.sessions = working
    assert post(client, body).status_code == 200
    assert counts(app) == (1, 1)


def test_service_refuses_to_start_without_keys(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(database_url=f"sqlite:///{tmp_path}/x.db", callback_keys=())
    with pytest.raises(ConfigError, match="RECORDER_CALLBACK_KEYS"):
        settings.require_callback_keys()
    Settings(callback_keys=(), allow_unsigned=True).require_callback_keys()


def test_sample_sign_matches_documented_key() -> None:
    from recorder.callbacks.tencent import expected_sign

    body = sample("css-record-mp4.json")
    assert expected_sign("demo-callback-key", str(body["t"])) == body["sign"]
    assert KEY != "demo-callback-key"
