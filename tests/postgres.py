"""A throwaway PostgreSQL server from Debian's binaries, for the test suite."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text

from recorder.demo import free_port, wait_for


def _bindir() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: run `make test`, which installs it")
    return os.path.dirname(found[-1])


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields a SQLAlchemy URL prefix ``postgresql+psycopg://recorder@127.0.0.1:<port>``."""
    bindir = _bindir()
    data = tempfile.mkdtemp(prefix="recorder-pg-")
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(data, "postgres", "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_postgres, f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "recorder", "-E", "UTF8", "--no-sync"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    settings = [
        "listen_addresses=127.0.0.1",
        "fsync=off",
        "synchronous_commit=off",
        "full_page_writes=off",
        "max_connections=300",
        f"unix_socket_directories={data}",
    ]
    args = [arg for setting in settings for arg in ("-c", setting)]
    server = subprocess.Popen(
        [*as_postgres, f"{bindir}/postgres", "-D", data, "-p", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"postgresql+psycopg://recorder@127.0.0.1:{port}"
    try:
        engine = create_engine(f"{url}/postgres")
        wait_for(lambda: engine.connect().close(), what="PostgreSQL")
        engine.dispose()
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


def create_database(url: str, name: str) -> str:
    engine = create_engine(f"{url}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return f"{url}/{name}"


def drop_database(url: str, name: str) -> None:
    engine = create_engine(f"{url}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()
