"""`recorder worker` as a process: who schedules the sweep, and when a short settle ends."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest
import requests

from recorder import prefetched
from recorder.config import Settings
from recorder.demo import process, wait_for
from recorder.queue import DROP_PREFETCHED, Publisher, default_time_limit
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


def test_every_worker_drops_the_copies_it_is_told_to_drop(tmp_path: Path, redis_url: str) -> None:
    """The command a worker sends when a broadcast is done reaches the others' work dirs (two
    workers, as on two machines), and only the copies it names go."""
    env = service_env(tmp_path, broker_url=f"{redis_url.rsplit('/', 1)[0]}/8")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    copies = [Path(env["RECORDER_WORK_DIR"]) / name / prefetched.FOLDER for name in ("a", "b")]
    for folder in copies:
        folder.mkdir(parents=True)
        for name in ("7.mp4", "8.flv", "70.mp4"):
            (folder / name).write_bytes(b"x")
    argv = [*CLI, "worker", "--concurrency=1", "--no-beat"]
    with (
        process(argv, {**env, "RECORDER_WORK_DIR": str(copies[0].parent)}, logs[0]),
        process(argv, {**env, "RECORDER_WORK_DIR": str(copies[1].parent)}, logs[1]),
    ):
        for log in logs:
            wait_for(lambda log=log: "ready." in log.read_text() or _not_yet(), what=f"worker {log.stem}")
        publisher = Publisher(Settings(broker_url=env["RECORDER_BROKER_URL"]))
        assert publisher.tell_workers(DROP_PREFETCHED, fragment_ids=[7, 8])
        wait_for(
            lambda: all(sorted(p.name for p in folder.iterdir()) == ["70.mp4"] for folder in copies) or _not_yet(),
            what="the copies dropped on both workers",
        )
