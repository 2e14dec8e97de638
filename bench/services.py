"""Starting what the benches measure, as processes: recorder serve and worker, a media server,
an S3-compatible server (moto), Redis, PostgreSQL; and signed callbacks for them."""

from __future__ import annotations

import os
import secrets
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import boto3
import requests

from recorder.demo import free_port, process, redis_server, signed_record_callback, wait_for  # noqa: F401

KEY = "bench-callback-key"
TOKEN = "bench-admin-token"
BUCKET = "bench"
AWS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
CLI = [sys.executable, "-m", "recorder.cli"]


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECORDER_", "AWS_"))}
    return {**env, **AWS}


@contextmanager
def media_server(root: Path, logs: Path) -> Iterator[str]:
    """Python's threaded http.server over ``root`` in its own process (off the bench's GIL)."""
    port = free_port()
    args = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)]
    with process(args, base_env(), logs / "media.log"):
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: requests.head(f"{base}/", timeout=1), what="media server")
        yield base


@contextmanager
def s3_server(logs: Path) -> Iterator[str]:
    """moto's S3 server in its own process, with the bench bucket; yields its endpoint."""
    port = free_port()
    args = [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)]
    with process(args, base_env(), logs / "moto.log"):
        endpoint = f"http://127.0.0.1:{port}"
        s3 = s3_client(endpoint)
        wait_for(lambda: s3.list_buckets(), what="moto S3 server")
        s3.create_bucket(Bucket=BUCKET)
        yield endpoint


def s3_client(endpoint: str) -> Any:
    for name, value in AWS.items():
        os.environ.setdefault(name, value)
    return boto3.session.Session(
        aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"],
        region_name=AWS["AWS_DEFAULT_REGION"],
    ).client("s3", endpoint_url=endpoint)


@contextmanager
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL server and database, as the test suite makes one; yields its URL."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.postgres import create_database, postgres_server

    with postgres_server() as server:
        yield create_database(server, f"bench_{secrets.token_hex(4)}")


def service_env(
    tmp: Path,
    *,
    broker: str,
    media: str,
    database: str | None = None,
    storage: str | None = None,
    endpoint: str | None = None,
    **extra: str,
) -> dict[str, str]:
    env = {
        **base_env(),
        "RECORDER_DATABASE_URL": database or f"sqlite:///{tmp / 'recorder.db'}",
        "RECORDER_BROKER_URL": broker,
        "RECORDER_STORAGE_URL": storage or f"file://{tmp / 'archive'}",
        "RECORDER_CALLBACK_KEYS": KEY,
        "RECORDER_API_TOKENS": TOKEN,
        "RECORDER_MEDIA_HOSTS": media.removeprefix("http://"),
        "RECORDER_WORK_DIR": str(tmp / "work"),
        "RECORDER_SETTLE_SECONDS": "1",
        "RECORDER_SWEEP_SECONDS": "1",
        **extra,
    }
    if endpoint:
        env["RECORDER_S3_ENDPOINT_URL"] = endpoint
    return env


@contextmanager
def serve(env: dict[str, str], logs: Path, *, workers: int = 2, module: list[str] | None = None) -> Iterator[str]:
    """``recorder serve`` (or ``module``, which takes the same options); yields its base URL."""
    port = free_port()
    args = [*(module or [*CLI, "serve"]), "--port", str(port), "--workers", str(workers)]
    with process(args, env, logs / f"serve-{port}.log"):
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: requests.get(f"{base}/healthz", timeout=1).raise_for_status(), what="the web server")
        yield base


@contextmanager
def workers(env: dict[str, str], logs: Path, *, count: int = 1, concurrency: int = 2) -> Iterator[list[int]]:
    """``count`` worker processes (the first runs the sweep scheduler); yields their pids."""
    with ExitStack() as stack:
        pids = []
        for n in range(count):
            args = [*CLI, "worker", f"--concurrency={concurrency}"] + (
                [] if n == 0 else ["--no-beat", f"--hostname=w{n}@%h"]
            )
            proc = stack.enter_context(process(args, env, logs / f"worker-{n}.log"))
            pids.append(proc.pid)
        _wait_ready(logs, count)
        yield pids


def _wait_ready(logs: Path, count: int) -> None:
    def ready() -> None:
        for n in range(count):
            if "ready." not in (logs / f"worker-{n}.log").read_text(errors="replace"):
                raise RuntimeError("not yet")

    wait_for(ready, what="the worker", timeout=60)


# --- callbacks and the database ------------------------------------------------------


def record_body(
    *, stream_id: str, file_id: str, url: str, start: float, seconds: float, size: int, fmt: str = "mp4"
) -> dict[str, Any]:
    """A signed CSS recording-file callback (event 100), as Tencent sends it."""
    return signed_record_callback(
        key=KEY, stream_id=stream_id, file_id=file_id, url=url, start=start, seconds=seconds, size=size,
        app="bench.example.com", fmt=fmt, session_id=stream_id,
    )  # fmt: skip


def send_broadcast(
    base: str, media: str, stream_id: str, files: list[Path], seconds: float, *, names: list[str]
) -> float:
    """Send one callback per fragment (ended a while ago, back to back); returns when the last was answered."""
    start = time.time() - 3600 - len(files) * seconds
    for i, (path, name) in enumerate(zip(files, names, strict=True)):
        body = record_body(
            stream_id=stream_id,
            file_id=f"{stream_id}-{i}",
            url=f"{media}/{name}",
            start=start + i * seconds,
            seconds=seconds,
            size=path.stat().st_size,
        )
        answer = requests.post(f"{base}/v1/callbacks/tencent", json=body, timeout=30)
        if answer.status_code != 200:
            raise RuntimeError(f"callback refused: {answer.status_code} {answer.text}")
    return time.monotonic()


class Database:
    """Reads the service's database directly (SQLite or PostgreSQL), cheaply enough to poll often."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine

        self.engine = create_engine(url)

    def statuses(self, stream_ids: list[str]) -> dict[str, str]:
        from sqlalchemy import bindparam, text

        query = text("SELECT stream_id, status, error FROM broadcasts WHERE stream_id IN :ids").bindparams(
            bindparam("ids", expanding=True)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query, {"ids": stream_ids}).all()
        for stream_id, status, error in rows:
            if status == "failed":
                raise RuntimeError(f"broadcast {stream_id} failed: {error}")
        return {stream_id: status for stream_id, status, _ in rows}

    def count(self, table: str) -> int:
        from sqlalchemy import text

        with self.engine.connect() as connection:
            return int(connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())

    def archive_of(self, stream_id: str) -> tuple[str, int, float]:
        from sqlalchemy import text

        query = text(
            "SELECT a.key, a.size, a.duration FROM archives a JOIN broadcasts b ON a.broadcast_id = b.id"
            " WHERE b.stream_id = :s ORDER BY a.version DESC"
        )
        with self.engine.connect() as connection:
            key, size, duration = connection.execute(query, {"s": stream_id}).first()  # type: ignore[misc]
        return key, size, duration

    def close(self) -> None:
        self.engine.dispose()


def wait_archived(db: Database, stream_ids: list[str], *, timeout: float, poll: float = 0.02) -> dict[str, float]:
    """Poll until every broadcast is archived; returns when each was first seen archived (monotonic)."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(stream_ids):
        now = time.monotonic()
        for stream_id, status in db.statuses(stream_ids).items():
            if status == "archived" and stream_id not in seen:
                seen[stream_id] = now
        if now > deadline:
            raise TimeoutError(f"{len(stream_ids) - len(seen)} broadcasts not archived within {timeout:.0f} s")
        time.sleep(poll)
    return seen


def sqlite_count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as connection:
        return int(connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
