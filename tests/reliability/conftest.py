"""Fault and fuzz suites: every case of issue 4 against real processes and servers.

The run ends with one table: what was tried (bad inputs, faults, callbacks) and what was
found (fragments, archives, and what must stay 0: lost, duplicated, 5xx). Any non-zero
must-be-0 figure fails the run, whatever the tests themselves said.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ffmpeg
import pytest
import requests

from recorder.archive import open_store
from recorder.config import Settings
from recorder.samples import make_clip
from recorder.store.db import make_engine, make_sessions
from tests.factories import BUCKET
from tests.processes import service_env
from tests.reliability.faults import Cluster, MediaServer, Proxy, RedisProcess, media_server
from tests.reliability.ledger import Counts, Ledger, Tally
from tests.test_fetch import _server, dns, server  # noqa: F401  # a real HTTP server and fake DNS answers

TALLY = Tally()


def _column(item: pytest.Item) -> str:
    params = item.callspec.params if hasattr(item, "callspec") else {}
    return str(params.get("database_url") or params.get("backend") or "no db")


@pytest.fixture
def count(request: pytest.FixtureRequest) -> Counts:
    """Add to the run's figures, in this test's database column."""
    return Counts(TALLY, _column(request.node))


def pytest_sessionfinish(session: pytest.Session) -> None:
    if TALLY.failures():
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.section("reliability figures")
    terminalreporter.write_line(TALLY.table())
    if failures := TALLY.failures():
        terminalreporter.write_line(f"FAILED: must be 0, found {failures}", red=True, bold=True)


# --- media ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def heavy_media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Clips that make the work slow enough to interrupt:

    - ``big{0,1,2}.mp4``: 6 s of 1280x720 noise, ~7.5 MB each, so three make an archive
      past boto3's 16 MiB multipart threshold;
    - ``small.mp4``: 6 s at 320x240, which ffmpeg re-encodes (~2 s) to join it to two big ones;
    - ``big{0,1,2}/index.m3u8``: the big clips as HLS playlists of 2 s segments.
    """
    root = tmp_path_factory.mktemp("heavy")
    tone = ffmpeg.input("sine=frequency=300:sample_rate=44100:duration=6", f="lavfi").audio
    sources = {
        f"big{i}": f"testsrc2=size=1280x720:rate=25:duration=6,noise=alls=6:allf=t:all_seed={i}" for i in range(3)
    }
    for name, source in sources.items():
        video = ffmpeg.input(source, f="lavfi").video
        ffmpeg.output(
            video, tone, str(root / f"{name}.mp4"), vcodec="libx264", preset="ultrafast", pix_fmt="yuv420p", g=25,
            acodec="aac",
        ).global_args("-nostdin", "-loglevel", "error").overwrite_output().run()  # fmt: skip
    make_clip(root / "small.mp4", 6)
    for name in sources:
        (root / name).mkdir()
        clip = ffmpeg.input(str(root / f"{name}.mp4"))
        ffmpeg.output(clip, str(root / name / "index.m3u8"), c="copy", f="hls", hls_time=2).global_args(
            "-nostdin", "-loglevel", "error"
        ).run()
    return root


@pytest.fixture(scope="session")
def _heavy_media(heavy_media_dir: Path) -> Iterator[MediaServer]:
    with media_server(heavy_media_dir) as media:
        yield media


@pytest.fixture
def heavy_media(_heavy_media: MediaServer) -> Iterator[MediaServer]:
    """The heavy clips over HTTP; a test may slow them down (``rate``), reset afterwards."""
    yield _heavy_media
    _heavy_media.rate = None


# --- a cluster of real processes ------------------------------------------------


@pytest.fixture
def redis() -> Iterator[RedisProcess]:
    redis = RedisProcess()
    redis.start()
    yield redis
    redis.kill()


@pytest.fixture
def s3_proxy(s3_server: str) -> Iterator[Proxy]:
    """The S3 server behind a proxy the test can slow down or make refuse."""
    host, port = s3_server.removeprefix("http://").split(":")
    proxy = Proxy((host, int(port)))
    yield proxy
    proxy.close()


@pytest.fixture
def cluster(
    tmp_path: Path, database_url: str, redis: RedisProcess, s3_proxy: Proxy, heavy_media: MediaServer, media_url: str
) -> Iterator[Cluster]:
    """Environment for serve and worker processes (none started yet): the test's database,
    its own Redis, S3 through the proxy under a fresh prefix, short settle, sweep and lease."""
    env = service_env(
        tmp_path,
        broker_url=redis.url,
        database_url=database_url,
        storage_url=f"s3://{BUCKET}/r{uuid.uuid4().hex[:12]}",
        s3_endpoint_url=f"http://{s3_proxy.address}",
        media_hosts=f"127.0.0.1:{heavy_media.port},{media_url.removeprefix('http://')}",
        settle_seconds="1",
        lease_seconds="3",
    )
    cluster = Cluster(tmp_path, env)
    yield cluster
    cluster.close()


@pytest.fixture
def ledger(cluster: Cluster, count: Counts, s3_server: str) -> Ledger:
    """Callbacks to the cluster's serve process; the audit reads its database and S3 directly."""
    settings = Settings(
        storage_url=cluster.env["RECORDER_STORAGE_URL"], s3_endpoint_url=s3_server, callback_keys=("x",)
    )

    def send(path: str, raw: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        answer = requests.post(f"{cluster.base}{path}", data=raw, headers=headers, timeout=15)
        return answer.status_code, answer.json()

    sessions = make_sessions(make_engine(cluster.env["RECORDER_DATABASE_URL"]))
    return Ledger(count, sessions, open_store(settings), send)
