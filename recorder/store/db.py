"""Engine and sessions. SQLite runs in WAL mode with ``BEGIN IMMEDIATE`` so that
concurrent writers queue on the lock instead of failing on a read-to-write upgrade,
and they queue on a file lock of ours first, which wakes the next one at once."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")


def make_engine(url: str) -> Engine:
    # Errors must not carry bound values into logs: a callback's body holds its sign and stream secrets.
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, future=True, hide_parameters=True)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, hide_parameters=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        _hold_while_checked_out(engine, TurnLock(Path(f"{parsed.database}-lock")))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # type: ignore[no-untyped-def]
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class TurnLock:
    """One holder at a time among this machine's threads and processes, reentrant per thread.

    SQLite lets one writer in and makes the others poll, sleeping up to 100 ms between tries:
    under load those sleeps were the p99 of the callback endpoint. Waiting on a file lock
    (and, inside a process, on a thread lock) instead wakes the next writer as soon as the
    lock is free.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._threads = threading.RLock()
        self._depth = 0
        self._file: tuple[int, IO[bytes]] | None = None  # (pid, file): a forked child opens its own

    def acquire(self) -> None:
        self._threads.acquire()
        try:
            if self._depth == 0:
                fcntl.flock(self._lock_file(), fcntl.LOCK_EX)
            self._depth += 1
        except BaseException:  # interrupted while waiting: this thread holds nothing
            self._threads.release()
            raise

    def release(self) -> None:
        try:
            self._depth -= 1
            if self._depth == 0:
                fcntl.flock(self._lock_file(), fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def _lock_file(self) -> IO[bytes]:
        if self._file is None or self._file[0] != os.getpid():
            self._file = (os.getpid(), open(self.path, "ab"))  # noqa: SIM115 (open for the process's life)
        return self._file[1]


def _hold_while_checked_out(engine: Engine, lock: TurnLock) -> None:
    """Every transaction runs between a connection's checkout and checkin: hold the turn meanwhile."""
    event.listen(engine, "checkout", lambda *_: lock.acquire())
    event.listen(engine, "checkin", lambda *_: lock.release())


def make_sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with sessions() as session, session.begin():
        yield session


# The newest migration's revision (tests/test_db.py checks it against Alembic's head): a
# process that finds the schema there skips importing Alembic, ~110 modules and ~9 MB.
SCHEMA_REVISION = "0004"


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    if schema_revision(engine) == SCHEMA_REVISION:
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def schema_revision(engine: Engine) -> str | None:
    """The revision Alembic recorded, or None for a database it never migrated."""
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one_or_none()
    except DatabaseError:  # no such table yet
        return None
