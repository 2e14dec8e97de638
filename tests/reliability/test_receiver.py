"""Every receiver case against a real `recorder serve` (gunicorn) with a real worker behind it,
on SQLite and on PostgreSQL. Each bad input gets a clear JSON error; each callback answered
200 ends, at the end of the module, as a verified archive or a failure with its reason."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, select

from recorder.archive import open_store
from recorder.config import Settings
from recorder.demo import wait_for
from recorder.store.db import make_engine, make_sessions
from recorder.store.models import Event, Fragment
from tests.factories import KEY, fragment_body, sample, signed
from tests.postgres import create_database, drop_database
from tests.processes import service_env
from tests.reliability.conftest import TALLY
from tests.reliability.faults import Cluster, RedisProcess
from tests.reliability.ledger import Counts, Ledger
from tests.test_callbacks import BAD_BODIES, BAD_SIGNS, MALFORMED_BODIES, counts, services_of
from tests.test_serve import drip

pytestmark = pytest.mark.e2e

START = 1_790_000_000
ROTATED = "old-rotated-key"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh database for the module, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('receiver') / 'recorder.db'}"
        return
    server = request.getfixturevalue("postgres_url")
    name = f"r_{uuid.uuid4().hex}"
    yield create_database(server, name)
    drop_database(server, name)


@pytest.fixture(scope="module")
def receiver(backend: str, tmp_path_factory: pytest.TempPathFactory, media_url: str) -> Iterator[Cluster]:
    """serve (2 s body deadline, two callback keys) and a worker, on a file store."""
    tmp = tmp_path_factory.mktemp("receiver")
    redis = RedisProcess()
    redis.start()
    env = service_env(
        tmp,
        broker_url=redis.url,
        database_url=backend,
        callback_keys=f"{KEY},{ROTATED}",
        media_hosts=media_url.removeprefix("http://"),
        body_timeout="2",
        settle_seconds="1",
    )
    cluster = Cluster(tmp, env)
    cluster.serve()
    cluster.worker("w1")
    yield cluster
    cluster.close()
    redis.kill()


@pytest.fixture(scope="module")
def ledger(receiver: Cluster, backend: str) -> Ledger:
    env = receiver.env

    def send(path: str, raw: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        answer = requests.post(f"{receiver.base}{path}", data=raw, headers=headers, timeout=15)
        return answer.status_code, answer.json()

    store = open_store(Settings(storage_url=env["RECORDER_STORAGE_URL"], callback_keys=("x",)))
    column = "sqlite" if backend.startswith("sqlite") else "postgresql"
    return Ledger(Counts(TALLY, column), make_sessions(make_engine(env["RECORDER_DATABASE_URL"])), store, send)


@pytest.fixture(scope="module")
def clip(media_dir: Path, media_url: str) -> dict[str, Any]:
    name = "clip0.mp4"
    return {"video_url": f"{media_url}/{name}", "file_size": (media_dir / name).stat().st_size}


def good(clip: dict[str, Any], stream_id: str, n: int = 0, **overrides: Any) -> dict[str, Any]:
    """A signed recording callback for a real 6 s clip."""
    return fragment_body(stream_id, f"{stream_id}-{n}", START + 8 * n, **{**clip, **overrides})


def fragments_of(ledger: Ledger, stream_id: str) -> list[Fragment]:
    with ledger.sessions() as session:
        return list(session.execute(select(Fragment).filter_by(stream_id=stream_id)).scalars())


def test_the_same_callback_3_times_then_10_at_once_then_retried_is_one_fragment(
    ledger: Ledger, clip: dict[str, Any]
) -> None:
    body = good(clip, "same_callback")
    for _ in range(3):
        ledger.post(body)
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda _: ledger.post(body), range(10)))
    unsigned = {k: v for k, v in body.items() if k not in ("t", "sign")}
    ledger.post(signed(unsigned, t=int(time.time()) + 500))  # Tencent's retry: new t and sign
    assert len(fragments_of(ledger, "same_callback")) == 1


def test_either_key_of_a_rotation_is_accepted(ledger: Ledger, clip: dict[str, Any]) -> None:
    body = good(clip, "rotation")
    ledger.post(body)
    ledger.post(signed({k: v for k, v in good(clip, "rotation", 1).items() if k not in ("t", "sign")}, key=ROTATED))
    assert len(fragments_of(ledger, "rotation")) == 2


@pytest.mark.parametrize("mutate, reason", BAD_SIGNS.values(), ids=BAD_SIGNS)
def test_bad_sign_or_t_is_401(ledger: Ledger, clip: dict[str, Any], mutate: Any, reason: str) -> None:
    ledger.post(mutate(good(clip, "bad_sign")), expect=401, reason=reason)


@pytest.mark.parametrize("raw, reason", MALFORMED_BODIES)
def test_malformed_bodies_are_400(ledger: Ledger, raw: bytes, reason: str) -> None:
    ledger.post(raw, expect=400, reason=reason)


@pytest.mark.parametrize("case", BAD_BODIES)
def test_bad_fields_are_400(ledger: Ledger, case: str) -> None:
    make, status, field = BAD_BODIES[case]
    ledger.post({k: v for k, v in make().items() if v is not None}, expect=status, reason=field)


@pytest.mark.parametrize(
    ("stream_id", "status"),
    [("../../etc/passwd", 200), ("a/../../b", 200), ("课堂📹", 200), ("nul\x00byte", 400), ("x" * 10240, 400)],
)
def test_hostile_stream_ids_are_stored_safely_or_refused(
    ledger: Ledger, clip: dict[str, Any], stream_id: str, status: int
) -> None:
    """Accepted ones are archived at the end of the module under keys the audit checks."""
    ledger.post(good(clip, stream_id), expect=status, reason="stream_id", bad=True)


def test_body_one_byte_over_the_cap_is_413_and_at_the_cap_is_accepted(ledger: Ledger, clip: dict[str, Any]) -> None:
    body = good(clip, "padded", padding="")
    size = len(json.dumps(body).encode())
    ledger.post({**body, "padding": "x" * (64 * 1024 - size + 1)}, expect=413, reason="64 KiB")
    ledger.post({**body, "padding": "x" * (64 * 1024 - size)})


def test_numbers_as_strings_are_accepted(ledger: Ledger, clip: dict[str, Any]) -> None:
    body = good(clip, "strings")
    numbers = ("start_time", "end_time", "duration", "file_size", "event_type", "appid")
    ledger.post(signed({k: str(v) if k in numbers else v for k, v in body.items() if k not in ("t", "sign")}))
    (fragment,) = fragments_of(ledger, "strings")
    assert fragment.file_size == clip["file_size"] and fragment.start == START


def test_unknown_event_type_is_stored_and_ignored(ledger: Ledger) -> None:
    ledger.post(signed({"event_type": 999, "stream_id": "unknown_type", "whatever": [1, {"x": None}]}), bad=True)
    with ledger.sessions() as session:
        events = session.execute(select(Event).where(Event.event_type == "999")).scalars().all()
    assert len(events) == 1 and not fragments_of(ledger, "unknown_type")


def test_callback_ext_that_is_not_json_is_kept_raw(ledger: Ledger, clip: dict[str, Any]) -> None:
    ledger.post(good(clip, "raw_ext", callback_ext="{not json"), bad=True)
    (fragment,) = fragments_of(ledger, "raw_ext")
    with ledger.sessions() as session:
        event = session.get_one(Event, fragment.event_id)
    assert json.loads(event.body)["callback_ext"] == "{not json"


def test_a_chunked_body_past_the_cap_is_413(receiver: Cluster, ledger: Ledger) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"event_type": 100, "padding": "'
        yield from [b"x" * 1024] * 100
        yield b'"}'

    answer = requests.post(
        f"{receiver.base}/v1/callbacks/tencent", data=chunks(), headers={"Content-Type": "application/json"}, timeout=10
    )
    ledger.count("callbacks")
    ledger.count("bad")
    assert answer.status_code == 413 and answer.json()["code"] == 413


def test_a_slow_drip_body_is_cut_off_without_an_answer(receiver: Cluster, ledger: Ledger) -> None:
    sock = drip(receiver.base, 1000)
    ledger.count("callbacks")
    ledger.count("bad")
    sock.settimeout(10)
    try:
        assert b"200 OK" not in sock.recv(4096)  # closed after the 2 s body deadline
    except OSError:
        pass
    finally:
        sock.close()


seen: list[dict[str, Any]] = []  # a stream per example, so no two are duplicates

# Bodies made of the sample's fields (and some others) set to any JSON value.
FIELDS = [*sample("css-record-mp4.json"), "padding", "extra"]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(changes=st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), JSON, min_size=1, max_size=4))
def test_fuzzed_callbacks_get_a_clear_answer(ledger: Ledger, clip: dict[str, Any], changes: dict[str, Any]) -> None:
    """Hypothesis over the callback parser, through the server: 200, or 400/401 with a reason."""
    stream_id = f"fuzzed_{len(seen)}"  # one broadcast each (hostile stream ids: above, and the parser fuzz)
    unsigned = good(clip, stream_id) | changes | {"stream_id": stream_id}
    seen.append(changes)
    ledger.post(signed({k: v for k, v in unsigned.items() if k not in ("t", "sign")}), expect=(200, 400, 401), bad=True)


def test_every_answered_callback_became_an_archive_or_a_failure_with_a_reason(
    receiver: Cluster, ledger: Ledger
) -> None:
    wait_for(ledger.finished, what="every broadcast to finish", timeout=120)
    broadcasts = ledger.audit(outcome="final")
    archived = {b.stream_id for b in broadcasts if b.status == "archived"}
    assert {"same_callback", "rotation", "../../etc/passwd", "a/../../b", "课堂📹", "strings", "raw_ext"} <= archived
    logs = receiver.log_text()
    assert not [secret for secret in (KEY, ROTATED, *ledger.signs) if secret in logs]


# --- database down, in-process on SQLite (PostgreSQL: see test_worker_faults) --------------


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sqlite_unavailable_is_503_then_one_fragment_on_replay(
    client: FlaskClient, app: Flask, settings: Settings, count: Counts
) -> None:
    svc = services_of(app)
    working = svc.callbacks.sessions
    svc.callbacks.sessions = make_sessions(create_engine(f"sqlite:///{settings.work_dir}/../recorder.db/x.db"))
    ledger = Ledger(count, working, svc.store, lambda path, raw, headers: _flask_send(client, path, raw, headers))
    body = fragment_body("sqlite_down", "sqlite_down-0", START)
    count("faults")
    ledger.post(body, expect=503, reason="cannot store the callback", bad=False)
    svc.callbacks.sessions = working
    ledger.post(body)
    assert counts(app) == (1, 1)
    ledger.audit(outcome=None)


def _flask_send(client: FlaskClient, path: str, raw: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    answer = client.post(path, data=raw, headers=headers)
    return answer.status_code, answer.get_json()
