"""End to end: `recorder serve` and `recorder worker` as processes, over HTTP, into S3."""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from recorder import stitch
from recorder.demo import wait_for
from recorder.samples import make_clip
from tests.factories import ADMIN, BUCKET, record_body
from tests.processes import serve_and_work, service_env

pytestmark = pytest.mark.e2e


@pytest.fixture
def service(tmp_path: Path, redis_url: str, s3_server: str, media_url: str) -> Iterator[str]:
    """serve + worker processes sharing a SQLite database, Redis and the S3 server."""
    env = service_env(
        tmp_path,
        broker_url=redis_url.rsplit("/", 1)[0] + "/3",
        storage_url=f"s3://{BUCKET}/e2e",
        s3_endpoint_url=s3_server,
        media_hosts=media_url.removeprefix("http://"),
    )
    with serve_and_work(tmp_path, env) as base:
        yield base


def archived(base: str, stream_id: str) -> dict[str, Any]:
    answer = requests.get(
        f"{base}/v1/broadcasts",
        params={"stream_id": stream_id},
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=5,
    )
    items = answer.json()["items"]
    if items and items[0]["status"] == "failed":
        pytest.fail(f"broadcast failed: {items[0]['error']}")
    if not items or items[0]["status"] != "archived":
        raise RuntimeError("not yet")
    return answer.json()


def test_three_mp4_fragments_become_one_archive_in_s3(
    service: str, media_url: str, media_dir: Path, s3_server: str, tmp_path: Path
) -> None:
    stream_id = "court_hearing_0042"
    start = 1_790_000_000
    bodies = [
        record_body(
            stream_id=stream_id,
            file_id=f"e2e-{i}",
            video_url=f"{media_url}/clip{i}.mp4",
            file_size=(media_dir / f"clip{i}.mp4").stat().st_size,
            start_time=start + 8 * i,
            end_time=start + 8 * i + 6,
            duration=6,
            start_time_usec=0,
            end_time_usec=0,
        )
        for i in range(3)
    ] * 2
    random.shuffle(bodies)
    for body in bodies:
        answer = requests.post(f"{service}/v1/callbacks/tencent", json=body, timeout=10)
        assert answer.status_code == 200 and answer.json() == {"code": 0}

    assert requests.get(f"{service}/v1/broadcasts", timeout=5).status_code == 401
    listed = wait_for(lambda: archived(service, stream_id), what="the archive", timeout=120)
    assert len(listed["items"]) == 1
    broadcast = listed["items"][0]
    assert len(broadcast["fragments"]) == 3 and len(broadcast["gaps"]) == 2

    key = broadcast["archive"]["key"]
    assert key == f"e2e/push.example.com/{stream_id}/2026/09/21/{broadcast['id']}-v1.mp4"
    s3 = boto3.client("s3", endpoint_url=s3_server)
    local = tmp_path / "archive.mp4"
    s3.download_file(BUCKET, key, str(local))
    facts = stitch.probe(local)
    assert facts.duration == pytest.approx(18, abs=1) and facts.video and facts.audio
    assert local.stat().st_size == broadcast["archive"]["size"]
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=key.removesuffix(".mp4") + ".json")["Body"].read())
    assert [f["source_key"] for f in manifest["fragments"]] == ["tencent:e2e-0", "tencent:e2e-1", "tencent:e2e-2"]
    presigned = requests.get(broadcast["archive"]["url"], timeout=10)
    assert presigned.status_code == 200 and len(presigned.content) == broadcast["archive"]["size"]


@pytest.mark.parametrize("fmt", ["mp4", "hls"])
def test_fragments_are_fetched_while_the_broadcast_settles(
    service: str, media_url: str, media_dir: Path, tmp_path: Path, fmt: str
) -> None:
    """The worker fetches and probes each fragment (an HLS playlist with its segments) when its
    callback is handled; the stitch then needs nothing from the media server, which no longer
    has the files."""
    stream_id = f"telemedicine_0007_{fmt}"
    tag = os.urandom(4).hex()
    sources = [own_source(media_dir, f"clip{i}.mp4", f"e2e-{tag}-{i}", fmt) for i in range(3)]
    start = int(time.time()) - 18  # recorded just now: the broadcast settles 2 s after the last callback
    for i, source in enumerate(sources):
        body = record_body(
            stream_id=stream_id,
            file_id=f"e2e-{tag}-{i}",
            file_format=fmt,
            video_url=f"{media_url}/{source.relative_to(media_dir).as_posix()}",
            file_size=None if fmt == "hls" else source.stat().st_size,
            start_time=start + 6 * i,
            end_time=start + 6 * i + 6,
            duration=6,
            start_time_usec=0,
            end_time_usec=0,
        )
        assert requests.post(f"{service}/v1/callbacks/tencent", json=body, timeout=10).status_code == 200
    prefetched = tmp_path / "work" / "0" / "fragments"

    def all_prefetched() -> None:
        if len(list(prefetched.glob(f"*.{fmt}"))) < 3:
            raise RuntimeError("not yet")

    wait_for(all_prefetched, what="the prefetched fragments", timeout=30)  # the settle is 2 s
    for source in sources:
        if fmt == "hls":
            shutil.rmtree(source.parent)
        else:
            source.unlink()

    broadcast = wait_for(lambda: archived(service, stream_id), what="the archive", timeout=60)["items"][0]
    assert len(broadcast["fragments"]) == 3 and broadcast["archive"]["size"] > 0

    def all_dropped() -> None:  # once the archive is recorded
        if list(prefetched.iterdir()):
            raise RuntimeError("not yet")

    wait_for(all_dropped, what="the prefetched files to be dropped", timeout=10)


def own_source(media_dir: Path, clip: str, name: str, fmt: str) -> Path:
    """A 6 s fragment that the test may take away: a copy of a session clip, ``<name>.mp4``, or
    an HLS playlist of 2 s segments, ``<name>/index.m3u8``."""
    if fmt != "hls":
        return Path(shutil.copy(media_dir / clip, media_dir / f"{name}.mp4"))
    (media_dir / name).mkdir()
    return make_clip(media_dir / name / "index.m3u8", 6, fmt="hls")
