"""Shared fixtures: real redis-server, real media over HTTP, a fresh app per test."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from flask import Flask
from flask.testing import FlaskClient
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

from recorder import pipeline
from recorder.app import create_app
from recorder.config import Settings
from recorder.demo import media_server, redis_server
from recorder.samples import make_clip
from tests.factories import ADMIN, BUCKET, KEY, READER, fragment_body
from tests.postgres import create_database, drop_database, postgres_server


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Clips made once per session: three 6 s MP4s."""
    root = tmp_path_factory.mktemp("media")
    for i in range(3):
        make_clip(root / f"clip{i}.mp4", 6, tone=300 + 100 * i)
    return root


@pytest.fixture(scope="session")
def media_url(media_dir: Path) -> Iterator[str]:
    with media_server(media_dir) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every test that touches the database runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'recorder.db'}"
        return
    server = request.getfixturevalue("postgres_url")
    name = f"t_{uuid.uuid4().hex}"
    yield create_database(server, name)
    drop_database(server, name)


@pytest.fixture
def settings(tmp_path: Path, database_url: str, redis_url: str, media_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        storage_url=f"file://{tmp_path / 'archive'}",
        broker_url=redis_url,
        callback_keys=(KEY, "old-rotated-key"),
        api_tokens=(ADMIN, f"{READER}:read"),
        media_hosts=("*.myqcloud.com", media_url.removeprefix("http://")),
        work_dir=tmp_path / "work",
        reconnect_window=300,
        settle_seconds=600,
    )


@pytest.fixture
def app(settings: Settings) -> Flask:
    return create_app(settings)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A moto S3 server on a free loopback port with one bucket; yields its endpoint URL."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
            env.delenv(name, raising=False)
        env.setenv("AWS_CONFIG_FILE", os.devnull)
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
        server.stop()


@pytest.fixture
def grouped(settings: Settings, client: FlaskClient) -> None:
    """Three streams grouped but not stitched: 'a' has two broadcasts an hour apart, each of
    two 6 s fragments 2 s apart; 'b' and 'c' one fragment each. Starts at 2026-09-21T14:13:20Z."""
    plan = [("a", 0), ("a", 8), ("a", 3600), ("a", 3608), ("b", 100), ("c", 200)]
    for n, (stream, offset) in enumerate(plan):
        body = fragment_body(stream, f"f{n}", 1_790_000_000 + offset)
        assert client.post("/v1/callbacks/tencent", json=body).status_code == 200
    ctx = pipeline.Context.build(settings)
    ctx.clock = lambda: time.time() + 10  # past the sweep's grace for fresh events
    for event_id in pipeline.sweep(ctx).events:
        pipeline.handle_event(ctx, event_id)


@pytest.fixture
def server(app: Flask) -> Iterator[str]:
    """The app on a free loopback port, over the test's database (for browsers and --url clients)."""
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    thread.join()
