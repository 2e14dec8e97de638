"""The intake's hot path: group commit and batched publishing."""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
import redis
from sqlalchemy import Engine, event, func, select
from sqlalchemy.exc import IntegrityError

from recorder.callbacks import Received
from recorder.callbacks.tencent import parse_tencent
from recorder.config import Settings
from recorder.queue import EVENTS_QUEUE, HANDLE_EVENT, Publisher
from recorder.store import repository
from recorder.store.db import make_engine, make_sessions, migrate, transaction
from recorder.store.intake import CallbackWriter
from recorder.store.models import Event, Fragment
from tests.factories import fragment_body


def received(file_id: str) -> Received:
    body = fragment_body("s", file_id, 1_790_000_000)
    raw = json.dumps(body)
    return Received("tencent", "100", f"key-{file_id}", raw, parse_tencent(body))


def counts(engine: Engine) -> tuple[int, int]:
    with engine.connect() as connection:
        events = connection.execute(select(func.count()).select_from(Event)).scalar_one()
        fragments = connection.execute(select(func.count()).select_from(Fragment)).scalar_one()
    return events, fragments


@pytest.fixture
def engine(database_url: str) -> Engine:
    engine = make_engine(database_url)
    migrate(engine)
    return engine


def test_concurrent_callbacks_are_each_stored_once_and_answered_with_their_own_id(engine: Engine) -> None:
    writer = CallbackWriter(make_sessions(engine))
    commits = 0

    @event.listens_for(engine, "commit")
    def _count(_connection) -> None:  # type: ignore[no-untyped-def]
        nonlocal commits
        commits += 1

    file_ids = [f"f{n % 60}" for n in range(120)]  # each callback twice
    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(lambda f: (f, writer.store(received(f), now=time.time())), file_ids))
    stored = {f: event_id for f, event_id in outcomes if event_id is not None}
    assert len(stored) == 60 and len(set(stored.values())) == 60  # one answer with an id per callback
    assert sum(event_id is None for _, event_id in outcomes) == 60  # its repeat: a duplicate
    assert counts(engine) == (60, 60)
    assert commits < 120  # shared transactions, not one per request


def test_a_repeat_within_one_batch_is_a_duplicate(engine: Engine) -> None:
    a, b = (repository.NewCallback("tencent", "100", f"k{n}", "{}", None, 1.0) for n in range(2))
    with transaction(make_sessions(engine)) as session:
        first, repeat, other = repository.store_callbacks(session, [a, a, b])
    assert first is not None and other is not None and repeat is None
    with transaction(make_sessions(engine)) as session:
        assert repository.store_callbacks(session, [b, a]) == [None, None]


def test_a_callback_the_database_refuses_fails_alone_and_its_secrets_stay_out_of_the_log(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    writer = CallbackWriter(make_sessions(engine))
    good = [received("g1"), received("g2")]
    body = '{"sign": "5e1f0c8a3b2d4e6f7a8b9c0d1e2f3a4b", "stream_param": "txSecret=live-secret"}'
    bad = Received("tencent", None, "key-bad", body, None)  # type: ignore[arg-type]  # NOT NULL event_type
    outcomes: list[Future[int | None]] = [Future() for _ in range(3)]
    writer._commit([(good[0], 1.0, outcomes[0]), (bad, 1.0, outcomes[1]), (good[1], 1.0, outcomes[2])])
    assert outcomes[0].result() is not None and outcomes[2].result() is not None
    with pytest.raises(IntegrityError):
        outcomes[1].result()
    assert counts(engine) == (2, 2)
    assert "could not store a tencent callback: IntegrityError" in caplog.text
    assert "5e1f0c8a" not in caplog.text and "live-secret" not in caplog.text


def test_events_published_together_travel_as_one_message(redis_url: str) -> None:
    broker = redis.Redis.from_url(redis_url)
    broker.delete(EVENTS_QUEUE)
    publisher = Publisher(Settings(broker_url=redis_url), linger=0.2)
    for event_id in (7, 8, 9):
        publisher.handle_later(event_id)
    deadline = time.monotonic() + 5
    while broker.llen(EVENTS_QUEUE) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # nothing else follows
    messages = [json.loads(m) for m in broker.lrange(EVENTS_QUEUE, 0, -1)]
    assert len(messages) == 1
    assert messages[0]["headers"]["task"] == HANDLE_EVENT
    args, _kwargs, _embed = json.loads(base64.b64decode(messages[0]["body"]))
    assert args == [7, 8, 9]
    broker.delete(EVENTS_QUEUE)
