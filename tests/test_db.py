"""The database layer: schema revisions, and SQLite writers taking turns."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import threading
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import event, text

from recorder.store.db import (
    MIGRATIONS,
    SCHEMA_REVISION,
    make_engine,
    make_sessions,
    migrate,
    schema_revision,
    transaction,
)


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
