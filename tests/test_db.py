"""The database layer: schema revisions, and SQLite writers taking turns."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, event, select, text
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session, sessionmaker

from recorder.events import FragmentInfo, MediaFormat
from recorder.store import repository
from recorder.store.db import (
    MIGRATIONS,
    SCHEMA_REVISION,
    make_engine,
    make_sessions,
    migrate,
    schema_revision,
    transaction,
)
from recorder.store.models import Fragment

START = 1_790_000_000.0


def test_the_schema_revision_is_alembics_head() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_REVISION


def test_migrate_brings_a_new_database_to_the_head_and_then_does_nothing(database_url: str) -> None:
    engine = make_engine(database_url)
    assert schema_revision(engine) is None
    migrate(engine)
    assert schema_revision(engine) == SCHEMA_REVISION
    # Another process finds the schema current: it does not even import Alembic.
    check = (
        f"import sys; from recorder.store.db import make_engine, migrate; migrate(make_engine({database_url!r}));"
        " print(sorted(m for m in sys.modules if m.startswith('alembic')))"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_errors_do_not_quote_bound_values(database_url: str) -> None:
    engine = make_engine(database_url)
    with pytest.raises(DatabaseError) as raised, engine.connect() as connection:
        connection.execute(text("SELECT * FROM no_such_table WHERE x = :secret"), {"secret": "live-secret"})
    assert "live-secret" not in str(raised.value)


def _write_many(url: str, name: str, count: int, errors: list[str]) -> None:
    engine = make_engine(url)

    @event.listens_for(engine, "connect")
    def _no_waiting(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.execute("PRAGMA busy_timeout=0")  # SQLite alone would now fail at once on contention

    sessions = make_sessions(engine)
    for n in range(count):
        try:
            with transaction(sessions) as session:
                session.execute(text("INSERT INTO turns (who) VALUES (:who)"), {"who": f"{name}-{n}"})
                session.execute(text("SELECT COUNT(*) FROM turns")).scalar_one()
        except Exception as error:
            errors.append(f"{name}: {error}")


def _process_writes(url: str, name: str, count: int, failures: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    errors: list[str] = []
    threads = [threading.Thread(target=_write_many, args=(url, f"{name}.{t}", count, errors)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failures.put(errors)


def test_sqlite_writers_take_turns_across_threads_and_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'turns.db'}"
    with make_engine(url).begin() as connection:
        connection.execute(text("CREATE TABLE turns (id INTEGER PRIMARY KEY, who TEXT)"))
    fork = multiprocessing.get_context("fork")
    failures = fork.Queue()
    processes = [fork.Process(target=_process_writes, args=(url, f"p{p}", 40, failures)) for p in range(3)]
    for process in processes:
        process.start()
    errors = [error for _ in processes for error in failures.get(timeout=60)]
    for process in processes:
        process.join(timeout=10)
    assert errors == []
    with make_engine(url).connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM turns")).scalar_one() == 3 * 4 * 40


def _stored(sessions: sessionmaker[Session], key: str, start: float) -> int:
    """A 6 s fragment's callback, stored and not handled yet: its event's id."""
    info = FragmentInfo(key, "live", "live", "s", MediaFormat("mp4"), start, start + 6, 6, 10, f"http://h/{key}.mp4")
    with transaction(sessions) as session:
        event_id = repository.store_callback(session, repository.NewCallback("t", "100", key, "{}", info, start + 7))
    assert event_id is not None
    return event_id


def _handle(sessions: sessionmaker[Session], event_id: int) -> None:
    """What handle_event does with a fragment's event."""
    with transaction(sessions) as session:
        fragment = repository.fragment_of_event(session, event_id)
        if fragment is not None and fragment.broadcast_id is None:
            repository.assign_fragment(session, fragment, window=300, now=START + 1000)


def _until_one_waits_for_a_lock(engine: Engine) -> None:
    """On PostgreSQL, until a transaction waits for a row lock; SQLite lets one writer in at a time."""
    if engine.dialect.name != "postgresql":
        return
    waiting = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
    deadline = time.monotonic() + 10
    while True:
        with engine.connect() as connection:  # a transaction each time: it sees one snapshot of the activity
            if connection.execute(waiting).scalar_one():
                return
        assert time.monotonic() < deadline, "nothing waits for the declaring transaction"
        time.sleep(0.01)


@pytest.mark.parametrize("stream", ["new", "known"])
def test_a_fragment_grouped_while_its_window_is_declared_ends_in_the_window(database_url: str, stream: str) -> None:
    """Its callback is handled while the transaction declaring the window is still open: the
    handling waits for the window, then finds the fragment taken, whether its stream row is one
    the window locked or one created meanwhile."""
    engine = make_engine(database_url)
    migrate(engine)
    sessions = make_sessions(engine)
    if stream == "known":
        _handle(sessions, _stored(sessions, "earlier", START - 3600))  # an hour before the window
    event_id = _stored(sessions, "inside", START + 100)
    with ThreadPoolExecutor(1) as pool:
        with transaction(sessions) as declaring:
            declared = {"stream_id": "s", "start": START, "end": START + 600}
            window = repository.declare_window(declaring, **declared, window=300, now=START)
            handled = pool.submit(_handle, sessions, event_id)
            _until_one_waits_for_a_lock(engine)
        handled.result()
    with sessions() as session:
        assert session.scalar(select(Fragment.broadcast_id).filter_by(source_key="inside")) == window.id
    engine.dispose()
