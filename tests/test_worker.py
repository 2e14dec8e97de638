"""`recorder worker` as a process: who schedules the sweep, and when a short settle ends."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest
import requests

from recorder.config import Settings
from recorder.demo import process, wait_for
from recorder.queue import default_time_limit
from tests.factories import ADMIN, record_body
from tests.processes import CLI, serve_and_work, service_env
from worker.celery_app import apply_time_limit, make_celery

pytestmark = pytest.mark.e2e


def _not_yet() -> None:
    raise RuntimeError("not yet")


def sweeps_in(log: Path) -> int:
    return log.read_text(errors="replace").count("Task recorder.sweep[")


@pytest.mark.parametrize("beat", ["--beat", "--no-beat"])
def test_the_worker_publishes_the_sweep_itself_without_a_beat_process(
    tmp_path: Path, redis_url: str, beat: str
) -> None:
    db = 5 if beat == "--beat" else 7  # nothing left queued by the other case
    env = service_env(tmp_path, broker_url=f"{redis_url.rsplit('/', 1)[0]}/{db}", sweep_seconds="0.5")
    log = tmp_path / "worker.log"
    with process([*CLI, "worker", "--concurrency=1", beat], env, log) as worker:
        wait_for(lambda: "ready." in log.read_text() or _not_yet(), what="the worker")
        time.sleep(3)
        children = [p.cmdline() for p in psutil.Process(worker.pid).children(recursive=True)]
        count = sweeps_in(log)
    assert len(children) == 1  # the one pool process: no beat process
    if beat == "--beat":
        assert count >= 3  # one every 0.5 s
    else:
        assert count == 0


def test_a_short_settle_ends_on_time_not_on_the_next_sweep_tick(
    tmp_path: Path, redis_url: str, media_url: str, media_dir: Path
) -> None:
    env = service_env(
        tmp_path,
        broker_url=redis_url.rsplit("/", 1)[0] + "/6",
        media_hosts=media_url.removeprefix("http://"),
        settle_seconds="1",
        sweep_seconds="3600",  # the periodic sweep never comes within the test
    )
    with serve_and_work(tmp_path, env) as base:
        body = record_body(
            stream_id="quick_settle",
            file_id="qs-0",
            video_url=f"{media_url}/clip0.mp4",
            file_size=(media_dir / "clip0.mp4").stat().st_size,
            start_time=1_790_000_000,
            end_time=1_790_000_006,
            duration=6,
            start_time_usec=0,
            end_time_usec=0,
        )
        assert requests.post(f"{base}/v1/callbacks/tencent", json=body, timeout=10).status_code == 200
        answered = time.monotonic()

        def archived() -> None:
            items = requests.get(
                f"{base}/v1/broadcasts",
                params={"stream_id": "quick_settle"},
                headers={"Authorization": f"Bearer {ADMIN}"},
                timeout=5,
            ).json()["items"]
            assert items and items[0]["status"] == "archived", items

        wait_for(archived, what="the archive", timeout=30)
    assert time.monotonic() - answered < 30


@pytest.mark.parametrize("given", [None, 20_000.0], ids=["default", "--time-limit 20000"])
def test_the_worker_sets_its_time_limit_when_it_starts_and_the_visibility_timeout_follows(given: float | None) -> None:
    settings = Settings(broker_url="redis://127.0.0.1:9/0")
    celery = make_celery(settings)
    assert celery.conf.task_time_limit is None  # in the shared config it would override the command line

    apply_time_limit(celery.conf, {"time_limit": given}, settings)

    limit = given or default_time_limit(settings)
    assert celery.conf.task_time_limit == limit
    assert celery.conf.broker_transport_options["visibility_timeout"] > 2 * limit  # never redelivered while running
