"""End to end per provider: three 6 s fragments sent as TRTC, SRS or nginx-rtmp callbacks
to `recorder serve`, grouped and stitched by `recorder worker`, end in one archive."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from recorder.demo import media_server, wait_for
from recorder.samples import make_clip
from tests.factories import BUCKET, DATA
from tests.processes import serve_and_work, service_env
from tests.test_e2e import archived
from tests.test_providers import TOKEN, TRTC_KEY, trtc_body, trtc_headers

pytestmark = pytest.mark.e2e

SRS_ROOT = "/usr/local/srs/objs/nginx/html"
NGINX_ROOT = "/var/rec"
# SRS and nginx-rtmp call back as each file closes: the service times a file by its callback.
FILE_SECONDS = 6.5


@pytest.fixture(scope="module")
def flv_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """nginx-rtmp records FLV only: three 6 s FLV clips over HTTP."""
    root = tmp_path_factory.mktemp("flv")
    for i in range(3):
        make_clip(root / f"clip{i}.flv", 6, fmt="flv", tone=300 + 100 * i)
    with media_server(root) as url:
        yield url


@pytest.fixture
def service(tmp_path: Path, redis_url: str, s3_server: str, media_url: str, flv_url: str) -> Iterator[str]:
    """serve + worker processes, with every provider configured."""
    env = service_env(
        tmp_path,
        broker_url=redis_url.rsplit("/", 1)[0] + "/4",
        storage_url=f"s3://{BUCKET}/e2e",
        s3_endpoint_url=s3_server,
        trtc_keys=TRTC_KEY,
        source_tokens=TOKEN,
        source_media_base=f"{SRS_ROOT}={media_url},{NGINX_ROOT}={flv_url}",
        media_hosts=",".join(url.removeprefix("http://") for url in (media_url, flv_url)),
        # Longer than the pause between two SRS/nginx-rtmp files, so they are not archived one by one.
        settle_seconds="10",
    )
    with serve_and_work(tmp_path, env) as base:
        yield base


def one_archive(base: str, stream_id: str, source_keys: list[str]) -> None:
    listed = wait_for(lambda: archived(base, stream_id), what="the archive", timeout=180)
    [broadcast] = listed["items"]
    assert [f["source_key"] for f in broadcast["fragments"]] == source_keys
    assert broadcast["archive"]["duration"] == pytest.approx(18, abs=1.5)


def test_trtc_vod_commits_become_one_archive(service: str, media_url: str) -> None:
    task = f"task-e2e-{random.randrange(10**6)}"
    start = int(time.time() * 1000) - 120_000

    def event(name: str, **payload: Any) -> dict[str, Any]:
        body = trtc_body(name, **payload)
        body["EventInfo"] |= {"RoomId": "20015", "TaskId": task}
        return body

    def send(body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        answer = requests.post(f"{service}/v1/callbacks/tencent/trtc", data=raw, headers=trtc_headers(raw), timeout=10)
        assert answer.status_code == 200 and answer.json() == {"code": 0}

    files = [
        event(
            "trtc-vod-commit.json",
            UserId="",  # a mixed recording: the task is the stream
            MediaId="",
            FileId=f"{task}-{i}",
            VideoUrl=f"{media_url}/clip{i}.mp4",
            StartTimeStamp=start + 8000 * i,
            EndTimeStamp=start + 8000 * i + 6000,
        )
        for i in range(3)
    ] * 2
    random.shuffle(files)
    # Start and stop keep the task's broadcast open between them; they come minutes apart in reality.
    send(event("trtc-recorder-start.json"))
    time.sleep(1)
    for body in files:
        send(body)
    time.sleep(1)
    send(event("trtc-recorder-stop.json"))
    one_archive(service, task, [f"trtc:{task}-{i}" for i in range(3)])


def test_srs_dvr_files_become_one_archive(service: str) -> None:
    stream = f"livestream{random.randrange(10**6)}"
    for i in range(3):
        time.sleep(FILE_SECONDS if i else 0)
        body = {
            **json.loads((DATA / "srs-on-dvr.json").read_text()),
            "stream": stream,
            "cwd": "/usr/local/srs",
            "file": f"./objs/nginx/html/clip{i}.mp4",
        }
        for _ in range(2):  # a repeated callback is one fragment
            answer = requests.post(f"{service}/v1/callbacks/srs", params={"token": TOKEN}, json=body, timeout=10)
            assert answer.status_code == 200 and answer.text == "0"
    one_archive(service, stream, [f"srs:341w361a:{SRS_ROOT}/clip{i}.mp4" for i in range(3)])


def test_nginx_rtmp_recordings_become_one_archive(service: str) -> None:
    name = f"camera{random.randrange(10**6)}"
    for i in range(3):
        time.sleep(FILE_SECONDS if i else 0)
        form = {"app": "live", "addr": "10.0.0.9", "clientid": "7", "call": "record_done", "recorder": ""}
        form |= {"name": name, "path": f"{NGINX_ROOT}/clip{i}.flv"}
        for _ in range(2):
            answer = requests.post(f"{service}/v1/callbacks/nginx-rtmp", params={"token": TOKEN}, data=form, timeout=10)
            assert answer.status_code == 200 and answer.json() == {"code": 0}
    one_archive(service, name, [f"nginx-rtmp:7:{NGINX_ROOT}/clip{i}.flv" for i in range(3)])
