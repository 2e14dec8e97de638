"""TRTC cloud recording, SRS on_dvr and nginx-rtmp on_record_done: verification, parsing, storage."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from recorder.app import services
from recorder.callbacks import parse_stored, trtc
from recorder.callbacks.sources import locate
from recorder.config import Settings
from recorder.errors import MalformedCallback
from recorder.events import PushSignal
from recorder.store.models import Event, Fragment
from tests.factories import DATA

TRTC_KEY = "trtc-test-key"
TRTC_APP = "1400000001"
TOKEN = "source-test-token"
SRS_ROOT = "/usr/local/srs/objs/nginx/html"
NGINX_ROOT = "/var/rec"
SRS_BASE = "http://10.0.0.5:8080"
NGINX_BASE = "http://10.0.0.6:8080/rec"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "trtc_keys": (TRTC_KEY, "trtc-old-key"),
            "source_tokens": (TOKEN, "old-token"),
            "source_media_base": ((SRS_ROOT, SRS_BASE), (NGINX_ROOT, NGINX_BASE)),
        }
    )


def trtc_body(name: str = "trtc-vod-commit.json", **payload: Any) -> dict[str, Any]:
    """A sample TRTC body stamped now; ``payload`` overrides fields of its file (or of Payload)."""
    body = json.loads((DATA / name).read_text())
    body["CallbackTs"] = int(time.time() * 1000)
    target = body["EventInfo"]["Payload"].get("TencentVod", body["EventInfo"]["Payload"])
    target.update(payload)
    return body


def trtc_headers(raw: bytes, *, key: str = TRTC_KEY, app_id: str = TRTC_APP) -> dict[str, str]:
    return {"Sign": trtc.expected_sign(key, raw), "SdkAppId": app_id}


def post_trtc(client: FlaskClient, body: dict[str, Any] | bytes, **headers: str) -> TestResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {**trtc_headers(raw), **headers}
    return client.post("/v1/callbacks/tencent/trtc", data=raw, headers=sent, content_type="application/json")


def srs_body(**overrides: Any) -> dict[str, Any]:
    return {**json.loads((DATA / "srs-on-dvr.json").read_text()), **overrides}


def nginx_form(**overrides: str) -> str:
    return urlencode({**dict(parse_qsl((DATA / "nginx-rtmp-record-done.form").read_text())), **overrides})


def post_srs(client: FlaskClient, body: dict[str, Any] | bytes, token: str | None = TOKEN) -> TestResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    query = {"token": token} if token is not None else {}
    return client.post("/v1/callbacks/srs", query_string=query, data=raw, content_type="application/json")


def post_nginx(client: FlaskClient, form: str, token: str | None = TOKEN) -> TestResponse:
    query = {"token": token} if token is not None else {}
    return client.post(
        "/v1/callbacks/nginx-rtmp", query_string=query, data=form, content_type="application/x-www-form-urlencoded"
    )


def stored(app: Flask) -> tuple[list[Event], list[Fragment]]:
    with app.app_context(), services().sessions() as session:
        events = list(session.execute(select(Event).order_by(Event.id)).scalars())
        fragments = list(session.execute(select(Fragment).order_by(Fragment.id)).scalars())
    return events, fragments


def counts(app: Flask) -> tuple[int, int]:
    events, fragments = stored(app)
    return len(events), len(fragments)


# --- TRTC: Sign over the raw bytes, CallbackTs freshness ---------------------


def test_documented_sign_vector_verifies() -> None:
    raw = (DATA / "trtc-sign-vector.body").read_bytes()
    documented = "kkoFeO3Oh2ZHnjtg8tEAQhtXK16/KI05W3BQff8IvGA="
    assert trtc.expected_sign("123654", raw) == documented
    # A room event (group 2) within its freshness window: verified, stored, nothing to do.
    [received] = trtc.receive(
        raw, sign=documented, app_id=TRTC_APP, keys=("other", "123654"), storage=None, now=1664209750, skew=30
    )
    assert (received.provider, received.event_type, received.event) == ("trtc", "204", None)
    assert json.loads(received.body) == {"SdkAppId": TRTC_APP, "body": raw.decode()}


def test_sample_vod_commit_sign_matches_its_documented_key() -> None:
    raw = (DATA / "trtc-vod-commit.json").read_bytes()
    assert trtc.expected_sign("demo-callback-key", raw) == (DATA / "trtc-vod-commit.sign").read_text().strip()


def test_vod_commit_becomes_a_fragment_stored_once(client: FlaskClient, app: Flask) -> None:
    raw = json.dumps(trtc_body()).encode()
    for _ in range(3):
        answer = post_trtc(client, raw)
        assert answer.status_code == 200 and answer.get_json() == {"code": 0}
    events, [fragment] = stored(app)
    assert [(e.provider, e.event_type) for e in events] == [("trtc", "311")]
    assert (fragment.source_key, fragment.app, fragment.appname) == (
        "trtc:5285890812345670001",
        "trtc-1400000001",
        "20015",
    )
    assert (fragment.stream_id, fragment.session_id, fragment.format) == ("20015_teacher_01_main", "task-7f3a9c", "mp4")
    assert (fragment.start, fragment.end, fragment.duration) == (1793001600, 1793003400, 1800)
    assert fragment.url == "http://1250000001.vod2.myqcloud.com/aa/bb/f0.mp4" and fragment.timed


def test_retry_restamped_and_resigned_is_a_duplicate(client: FlaskClient, app: Flask) -> None:
    body = trtc_body()
    assert post_trtc(client, body).status_code == 200
    body["CallbackTs"] += 10_000
    assert post_trtc(client, body).status_code == 200
    assert counts(app) == (1, 1)


def test_rotated_key_is_accepted(client: FlaskClient, app: Flask) -> None:
    raw = json.dumps(trtc_body()).encode()
    assert post_trtc(client, raw, **trtc_headers(raw, key="trtc-old-key")).status_code == 200
    assert counts(app) == (1, 1)


@pytest.mark.parametrize(
    "headers, status, reason",
    [
        ({"Sign": "kkoFeO3Oh2ZHnjtg8tEAQhtXK16/KI05W3BQff8IvGA="}, 401, "does not match"),
        ({"Sign": ""}, 401, "missing"),
        ({"SdkAppId": ""}, 400, "SdkAppId"),
        ({"SdkAppId": "14000abc"}, 400, "SdkAppId"),
        ({"SdkAppId": "1400\xb2"}, 400, "SdkAppId"),  # a superscript 2: str.isdigit() takes it
    ],
)
def test_bad_sign_or_app_is_refused(
    client: FlaskClient, app: Flask, headers: dict[str, str], status: int, reason: str
) -> None:
    answer = post_trtc(client, trtc_body(), **headers)
    assert answer.status_code == status and reason in answer.get_json()["error"]
    assert counts(app) == (0, 0)


def test_sign_by_unknown_key_or_over_other_bytes_is_401(client: FlaskClient, app: Flask) -> None:
    raw = json.dumps(trtc_body()).encode()
    assert post_trtc(client, raw, **trtc_headers(raw, key="wrong-key")).status_code == 401
    # The Sign covers the exact bytes: the same JSON re-serialised does not verify.
    assert post_trtc(client, raw + b" ", **trtc_headers(raw)).status_code == 401
    answer = client.post("/v1/callbacks/tencent/trtc", data=raw, headers={"SdkAppId": TRTC_APP})
    assert answer.status_code == 401 and "Sign header is missing" in answer.get_json()["error"]
    assert counts(app) == (0, 0)


def test_no_trtc_key_configured_refuses_everything(settings: Settings) -> None:
    from recorder.app import create_app

    client = create_app(settings.model_copy(update={"trtc_keys": ()})).test_client()
    answer = post_trtc(client, trtc_body())
    assert answer.status_code == 401 and "RECORDER_TRTC_KEYS" in answer.get_json()["error"]


@pytest.mark.parametrize(
    "age, status",
    [(0, 200), (600 + 20, 200), (600 + 40, 401), (-20, 200), (-60, 401), (-86400 * 365, 401)],
)
def test_callback_ts_freshness(client: FlaskClient, age: float, status: int) -> None:
    body = trtc_body()
    body["CallbackTs"] = int((time.time() - age) * 1000)
    answer = post_trtc(client, body)
    assert answer.status_code == status
    if status == 401:
        assert "CallbackTs" in answer.get_json()["error"]


# --- TRTC: what each event means ----------------------------------------------


def test_mixed_recording_is_grouped_by_task(client: FlaskClient, app: Flask) -> None:
    assert post_trtc(client, trtc_body(UserId="", MediaId="", TrackType="")).status_code == 200
    _, [fragment] = stored(app)
    assert (fragment.appname, fragment.stream_id, fragment.session_id) == ("20015", "task-7f3a9c", "task-7f3a9c")


def test_single_stream_tracks_recorded_apart_are_separate_streams(client: FlaskClient, app: Flask) -> None:
    body = trtc_body(TrackType="audio", FileId="f-audio", VideoUrl="http://v.vod2.myqcloud.com/a/f.m3u8")
    assert post_trtc(client, body).status_code == 200
    _, [fragment] = stored(app)
    assert (fragment.stream_id, fragment.format) == ("20015_teacher_01_main_audio", "hls")


def test_cloud_storage_files_become_one_fragment_each(settings: Settings) -> None:
    from recorder.app import create_app

    template = "https://rec-1250000001.cos.ap-guangzhou.myqcloud.com/trtc/{TaskId}/{FileName}"
    app = create_app(settings.model_copy(update={"trtc_storage_url": template}))
    client = app.test_client()
    body = trtc_body("trtc-storage-mp4.json")
    for _ in range(2):
        assert post_trtc(client, body).status_code == 200
    events, fragments = stored(app)
    assert [e.event_type for e in events] == ["310", "310"]
    assert [f.stream_id for f in fragments] == ["20016_teacher_02_main", "20016_student_07_main"]
    name = body["EventInfo"]["Payload"]["FileMessage"][0]["FileName"]
    assert fragments[0].url == f"https://rec-1250000001.cos.ap-guangzhou.myqcloud.com/trtc/task-8b4d0e/{name}"
    assert fragments[0].source_key == f"trtc:task-8b4d0e/{name}"
    assert (fragments[1].start, fragments[1].end) == (1793003460, 1793005190)


def test_cloud_storage_files_without_a_storage_url_are_stored_only(client: FlaskClient, app: Flask) -> None:
    assert post_trtc(client, trtc_body("trtc-storage-mp4.json")).status_code == 200
    assert counts(app) == (1, 0)


def test_start_and_stop_bound_the_task_session(client: FlaskClient, app: Flask) -> None:
    for name in ("trtc-recorder-start.json", "trtc-recorder-stop.json"):
        assert post_trtc(client, trtc_body(name)).status_code == 200
    events, fragments = stored(app)
    assert fragments == []
    start, stop = (parse_stored(e.provider, e.body) for e in events)
    assert start == PushSignal("trtc-1400000001", "20017", "task-9c5e1f", "task-9c5e1f", 1793001600.3, live=True)
    assert stop == PushSignal("trtc-1400000001", "20017", "task-9c5e1f", "task-9c5e1f", 1793005200.6, live=False)


def test_stored_file_events_have_no_signal(client: FlaskClient, app: Flask) -> None:
    assert post_trtc(client, trtc_body()).status_code == 200
    [event], _ = stored(app)
    assert parse_stored(event.provider, event.body) is None


@pytest.mark.parametrize(
    "body",
    [
        {"EventGroupId": 3, "EventType": 305, "EventInfo": {"RoomId": "1", "TaskId": "t", "Payload": {"Status": 0}}},
        {"EventGroupId": 3, "EventType": 399, "EventInfo": {}},
        {"EventGroupId": 1, "EventType": 103, "EventInfo": {"RoomId": 8489, "UserId": "u"}},
    ],
)
def test_other_events_are_stored_and_answered_200(client: FlaskClient, app: Flask, body: dict[str, Any]) -> None:
    answer = post_trtc(client, {**body, "CallbackTs": int(time.time() * 1000)})
    assert answer.status_code == 200 and answer.get_json() == {"code": 0}
    assert counts(app) == (1, 0)


def test_failed_vod_upload_is_stored_without_a_fragment(client: FlaskClient, app: Flask) -> None:
    body = trtc_body()
    body["EventInfo"]["Payload"] = {"Status": 1, "Errmsg": "upload to vod failed"}
    assert post_trtc(client, body).status_code == 200
    assert counts(app) == (1, 0)


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"VideoUrl": "file:///etc/passwd"}, "VideoUrl"),
        ({"VideoUrl": "http://v.vod2.myqcloud.com/a/f.mkv"}, "format"),
        ({"VideoUrl": "http://v.vod2.myqcloud.com/a\x00/f.mp4"}, "VideoUrl"),  # PostgreSQL cannot store it
        ({"VideoUrl": "http://v.vod2.myqcloud.com/a\n/f.mp4"}, "VideoUrl"),
        ({"EndTimeStamp": 1793001500000}, "EndTimeStamp"),
        ({"FileId": ""}, "FileId"),
        ({"StartTimeStamp": "soon"}, "StartTimeStamp"),
        # Once stored, a time past 2999 made every fragment and broadcast listing a 500.
        ({"StartTimeStamp": 10**30, "EndTimeStamp": 10**30 + 1000}, "StartTimeStamp"),
        ({"EndTimeStamp": 10**30}, "EndTimeStamp"),
    ],
)
def test_bad_file_fields_are_400(client: FlaskClient, app: Flask, change: dict[str, Any], reason: str) -> None:
    answer = post_trtc(client, trtc_body(**change))
    assert answer.status_code == 400 and reason in answer.get_json()["error"]
    assert counts(app) == (0, 0)


@pytest.mark.parametrize(
    "field, value",
    [
        ("EventTs", float("inf")),
        ("EventTs", float("nan")),
        ("EventTs", 1e30),
        ("EventMsTs", 10**30),
        ("CallbackTs", 10**400),
    ],
    ids=["EventTs inf", "EventTs NaN", "EventTs 1e30", "EventMsTs 10**30", "CallbackTs 10**400"],
)
def test_event_times_past_2999_are_400(client: FlaskClient, app: Flask, field: str, value: float) -> None:
    body = trtc_body("trtc-recorder-start.json")
    (body if field == "CallbackTs" else body["EventInfo"])[field] = value
    answer = post_trtc(client, body)
    assert answer.status_code == 400 and field in answer.get_json()["error"]
    assert counts(app) == (0, 0)


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"{not json", "not valid JSON"),
        (b'{"EventGroupId": 3, "EventGroupId": 3}', "duplicate"),
        (b'{"EventGroupId": 3, "EventType": 311, "EventInfo": {}}', "CallbackTs"),
        (b"[]", "JSON object"),
        (json.dumps({**trtc_body(), "EventType": 10**40}).encode(), "EventType"),  # stored in 32 characters
        (b"[" * 30_000 + b"]" * 30_000, "nested more than 32 levels"),
        (json.dumps({**trtc_body(), "x": {"y": ["\ud800"]}}).encode(), "surrogate"),
    ],
)
def test_malformed_trtc_bodies_are_400(client: FlaskClient, app: Flask, raw: bytes, reason: str) -> None:
    answer = post_trtc(client, raw)
    assert answer.status_code == 400 and reason in answer.get_json()["error"]
    assert counts(app) == (0, 0)


# --- SRS and nginx-rtmp: tokens, path mapping --------------------------------


def test_srs_dvr_becomes_an_untimed_fragment_stored_once(client: FlaskClient, app: Flask) -> None:
    before = time.time()
    for _ in range(2):
        answer = post_srs(client, srs_body())
        assert answer.status_code == 200 and answer.get_data(as_text=True) == "0"
    [event], [fragment] = stored(app)
    assert (event.provider, event.event_type) == ("srs", "on_dvr")
    path = f"{SRS_ROOT}/live/livestream.1793001600123.flv"
    assert (fragment.source_key, fragment.url) == (
        f"srs:341w361a:{path}",
        f"{SRS_BASE}/live/livestream.1793001600123.flv",
    )
    assert (fragment.app, fragment.appname, fragment.stream_id) == ("__defaultVhost__", "live", "livestream")
    assert (fragment.format, fragment.timed, fragment.duration, fragment.session_id) == ("flv", False, 0, None)
    assert before <= fragment.start == fragment.end <= time.time()


def test_srs_absolute_file_ignores_cwd(client: FlaskClient, app: Flask) -> None:
    assert post_srs(client, srs_body(cwd="/elsewhere", file=f"{SRS_ROOT}/live/a b#1.mp4")).status_code == 200
    _, [fragment] = stored(app)
    assert (fragment.url, fragment.format) == (f"{SRS_BASE}/live/a%20b%231.mp4", "mp4")


def test_nginx_record_done_becomes_an_untimed_fragment(client: FlaskClient, app: Flask) -> None:
    for _ in range(2):
        answer = post_nginx(client, nginx_form())
        assert answer.status_code == 200 and answer.get_json() == {"code": 0}
    [event], [fragment] = stored(app)
    assert (event.provider, event.event_type) == ("nginx-rtmp", "record_done")
    assert fragment.source_key == f"nginx-rtmp:7:{NGINX_ROOT}/live/camera1-1793001600.flv"
    assert fragment.url == f"{NGINX_BASE}/live/camera1-1793001600.flv"
    assert (fragment.app, fragment.appname, fragment.stream_id, fragment.format) == (
        "nginx-rtmp",
        "live",
        "camera1",
        "flv",
    )
    assert not fragment.timed


def test_publisher_arguments_cannot_override_nginx_fields(client: FlaskClient, app: Flask) -> None:
    # nginx-rtmp appends the publisher's arguments, raw, after its own fields.
    form = nginx_form() + "&path=/var/rec/other.flv&name=other&call=publish&token&x=%ff"
    assert post_nginx(client, form).status_code == 200
    [event], [fragment] = stored(app)
    assert (fragment.stream_id, fragment.url) == ("camera1", f"{NGINX_BASE}/live/camera1-1793001600.flv")
    assert event.body == form


def test_nginx_named_recorder_is_its_own_app(client: FlaskClient, app: Flask) -> None:
    assert post_nginx(client, nginx_form(recorder="audio", path="/var/rec/audio/camera1.flv")).status_code == 200
    _, [fragment] = stored(app)
    assert (fragment.app, fragment.stream_id) == ("nginx-rtmp-audio", "camera1")


# Each publish of a stream, and each repeat of its callback; the client ids SRS 3 sent were numbers.
PUBLISHES = {
    "srs": (lambda c, n: post_srs(c, srs_body(client_id=n)), [1234, "v9t1p6i3", "v9t1p6i3"]),
    "nginx-rtmp": (lambda c, n: post_nginx(c, nginx_form(clientid=n)), ["7", "8", "8"]),
}


@pytest.mark.parametrize("provider", PUBLISHES)
def test_a_new_publish_to_the_same_file_is_a_new_fragment(client: FlaskClient, app: Flask, provider: str) -> None:
    # nginx-rtmp's default (record_unique off) records every publish of a stream to the same file.
    send, clients = PUBLISHES[provider]
    for publisher in clients:
        assert send(client, publisher).status_code == 200
    _, fragments = stored(app)
    assert [f.source_key.split(":")[1] for f in fragments] == [str(clients[0]), clients[1]]


PROVIDERS = {
    "srs": lambda client, token: post_srs(client, srs_body(), token),
    "nginx-rtmp": lambda client, token: post_nginx(client, nginx_form(), token),
}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    "token, status, reason",
    [
        (TOKEN, 200, None),
        ("old-token", 200, None),
        ("wrong", 401, "does not match"),
        ("", 401, "missing"),
        (None, 401, "missing"),
    ],
)
def test_source_tokens(
    client: FlaskClient, app: Flask, provider: str, token: str | None, status: int, reason: str | None
) -> None:
    answer = PROVIDERS[provider](client, token)
    assert answer.status_code == status
    if reason:
        assert answer.get_json()["code"] != 0 and reason in answer.get_json()["error"]
    assert counts(app) == ((1, 1) if status == 200 else (0, 0))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_no_source_token_configured_refuses_everything(settings: Settings, provider: str) -> None:
    from recorder.app import create_app

    client = create_app(settings.model_copy(update={"source_tokens": ()})).test_client()
    answer = PROVIDERS[provider](client, "")
    assert answer.status_code == 401 and "RECORDER_SOURCE_TOKENS" in answer.get_json()["error"]


BASES = (("/data/srs", "http://h:1/srs"), ("/data/srs/objs/hd", "http://hd:2"), ("/", "http://root"))

PATHS = [
    ("/data/srs/live/a.flv", "http://h:1/srs/live/a.flv"),
    ("/data/srs/./live//a.flv", "http://h:1/srs/live/a.flv"),
    ("/data/srs/objs/hd/a.flv", "http://hd:2/a.flv"),  # the longest prefix wins
    ("/data/srs/x/../live/a.flv", "http://h:1/srs/live/a.flv"),  # `..` that stays inside is resolved
    ("/data/srs/live/a?b=%2F.flv", "http://h:1/srs/live/a%3Fb%3D%252F.flv"),
    ("/data/srs2/a.flv", "http://root/data/srs2/a.flv"),  # a sibling is not under /data/srs
]


@pytest.mark.parametrize("path, url", PATHS)
def test_path_mapping(path: str, url: str) -> None:
    assert locate(path, BASES)[1] == url


@pytest.mark.parametrize(
    "path, reason",
    [
        ("/data/srs/../etc/passwd", "escapes '/data/srs'"),
        ("/data/srs/live/../../../etc/passwd", "escapes '/data/srs'"),
        ("/data/srs2/a.flv", "under no"),
        ("live/a.flv", "under no"),
        ("/data/srs", "under no"),
    ],
)
def test_path_outside_every_prefix_is_refused(path: str, reason: str) -> None:
    bases = (("/data/srs", "http://h:1/srs"), ("/data/srs/live", "http://h:1/live"))
    with pytest.raises(MalformedCallback, match=reason):
        locate(path, bases)


@pytest.mark.parametrize(
    "send, reason",
    [
        (lambda c: post_srs(c, srs_body(file="../../../../etc/passwd.flv")), "under no"),
        (lambda c: post_srs(c, srs_body(file="./objs/nginx/html/../../../../../etc/x.flv")), "escapes"),
        (lambda c: post_srs(c, srs_body(cwd="", file="objs/a.flv")), "under no"),
        (lambda c: post_srs(c, srs_body(file="./objs/nginx/html/live/a.mkv")), "format"),
        (lambda c: post_srs(c, srs_body(file=f"./objs/nginx/html/{'x' * 250}.flv")), "longer than 255"),
        (lambda c: post_srs(c, srs_body(action="on_publish")), "action"),
        (lambda c: post_srs(c, srs_body(stream="")), "stream"),
        (lambda c: post_srs(c, srs_body(stream="a\nb")), "stream"),
        (lambda c: post_srs(c, srs_body(file="./objs/nginx/html/live/a\x00.flv")), "file"),
        (lambda c: post_srs(c, srs_body(cwd="/usr/local/srs\n")), "cwd"),
        (lambda c: post_srs(c, srs_body(client_id="a:/b")), "client_id"),
        (lambda c: post_srs(c, b"0"), "JSON object"),
        (lambda c: post_srs(c, b'{"a":' * 10_000 + b"1" + b"}" * 10_000), "nested more than 32 levels"),
        (lambda c: post_srs(c, srs_body(server_id="\udc00")), "surrogate"),
        (lambda c: post_nginx(c, nginx_form(path="/var/rec/../../etc/passwd.flv")), "escapes"),
        (lambda c: post_nginx(c, nginx_form(call="publish")), "call"),
        (lambda c: post_nginx(c, nginx_form(clientid="7" * 33)), "clientid"),
        (lambda c: post_nginx(c, "call"), "call"),
        (lambda c: post_nginx(c, nginx_form(name="")), "name"),
        (lambda c: post_nginx(c, nginx_form(path="/var/rec/live/a\x00.flv")), "path"),
        (lambda c: post_nginx(c, nginx_form() + "&x=\x00"), "NUL"),  # the form is stored as sent
    ],
)
def test_bad_source_callbacks_are_400(client: FlaskClient, app: Flask, send, reason: str) -> None:  # type: ignore[no-untyped-def]
    answer = send(client)
    assert answer.status_code == 400 and reason in answer.get_json()["error"]
    assert counts(app) == (0, 0)


def test_source_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECORDER_SOURCE_MEDIA_BASE", "/data/srs/=http://10.0.0.5:8080/, /var/rec=https://x.example/r")
    monkeypatch.setenv("RECORDER_SOURCE_TOKENS", "a, b")
    monkeypatch.setenv("RECORDER_TRTC_KEYS", "k1,k2")
    settings = Settings()
    assert settings.source_media_base == (("/data/srs", "http://10.0.0.5:8080"), ("/var/rec", "https://x.example/r"))
    assert (settings.source_tokens, settings.trtc_keys) == (("a", "b"), ("k1", "k2"))
    for bad in ("data=http://x", "/data=ftp://x", "/data"):
        monkeypatch.setenv("RECORDER_SOURCE_MEDIA_BASE", bad)
        with pytest.raises(ValueError, match="absolute server path prefix"):
            Settings()


@pytest.mark.parametrize(
    "send",
    [
        lambda c, pad: post_trtc(c, {**trtc_body(), "padding": pad}),
        lambda c, pad: post_srs(c, srs_body(padding=pad)),
        lambda c, pad: post_nginx(c, nginx_form(padding=pad)),
    ],
)
def test_bodies_over_64_kib_are_413(client: FlaskClient, app: Flask, send) -> None:  # type: ignore[no-untyped-def]
    answer = send(client, "x" * 64 * 1024)
    assert answer.status_code == 413 and answer.get_json()["code"] != 0
    assert counts(app) == (0, 0)
