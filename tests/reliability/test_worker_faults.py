"""Worker faults against real processes: `recorder serve` and `recorder worker` on the test's
database (SQLite and PostgreSQL), a private redis-server, S3 (moto) behind a proxy.

Each scenario kills, stops or starves something for real, then checks that every callback
answered 200 ended as exactly one verified archive (or a failure with its reason), with no
ffmpeg left running and no scratch files left behind.
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from recorder.archive import S3Store
from recorder.config import Settings
from recorder.demo import wait_for
from recorder.queue import STITCH, Publisher
from recorder.store.models import Event
from tests.factories import auth, fragment_body
from tests.reliability.faults import (
    Cluster,
    MediaServer,
    Proxy,
    RedisProcess,
    connected_to,
    ffmpegs,
    gone,
    kill,
    leftovers,
)
from tests.reliability.ledger import Counts, Ledger

pytestmark = pytest.mark.e2e

START = 1_790_000_000


def bodies(base: str, root: Path, stream_id: str, names: list[str], fmt: str = "mp4") -> list[dict[str, Any]]:
    """Recording callbacks for 6 s clips (served from ``root`` at ``base``) 2 s apart: one broadcast."""
    return [
        fragment_body(
            stream_id,
            f"{stream_id}-{n}",
            START + 8 * n,
            file_format=fmt,
            video_url=f"{base}/{name}",
            file_size=None if fmt == "hls" else (root / name).stat().st_size,  # a playlist's is not known
        )
        for n, name in enumerate(names)
    ]


def finish(cluster: Cluster, ledger: Ledger, *, timeout: float = 60, **expected: Any) -> None:
    """Wait until every answered fragment's broadcast is final, audit it, check the machines are clean."""
    wait_for(ledger.finished, what="the broadcasts to finish", timeout=timeout)
    ledger.audit(**expected)
    wait_for(lambda: gone(ffmpegs(cluster.work)), what="no ffmpeg left", timeout=5)
    # A killed pool process's scratch goes when its replacement starts, a moment after the kill.
    wait_for(lambda: not leftovers(cluster.work) or 1 / 0, what="no scratch files left", timeout=15)


def publish(cluster: Cluster, task: str, *args: Any) -> str:
    """Send a task as Redis would redeliver it; returns its id."""
    publisher = Publisher(Settings(broker_url=cluster.env["RECORDER_BROKER_URL"]))
    return str(publisher.celery.send_task(task, args=args).id)


def outcome_logged(cluster: Cluster, task_id: str) -> str:
    """What a task returned, from the worker logs (raises until it has finished)."""
    found = re.search(rf"\[{task_id}\] succeeded in [0-9.e-]+s: '(\w+)'", cluster.log_text())
    if not found:
        raise LookupError(f"task {task_id} has not finished")
    return found[1]


BIG = ["big0.mp4", "big1.mp4", "big2.mp4"]  # heavy_media: 1280x720 noise, ~7.5 MB each
SMALL = ["clip0.mp4", "clip1.mp4", "clip2.mp4"]  # the session's media_url: 320x240, quick to stitch


def test_worker_killed_during_download(
    cluster: Cluster, ledger: Ledger, heavy_media: MediaServer, heavy_media_dir: Path, count: Counts
) -> None:
    kill_the_first_download(cluster, ledger, heavy_media, heavy_media_dir, "kill_in_download", prefetch="0")
    count("faults")
    finish(cluster, ledger)


@pytest.mark.parametrize("fmt", ["mp4", "hls"])
def test_worker_killed_during_a_prefetch(
    cluster: Cluster, ledger: Ledger, heavy_media: MediaServer, heavy_media_dir: Path, count: Counts, fmt: str
) -> None:
    """A prefetch killed mid-download leaves its fragment to the stitch (or to the prefetch
    Redis delivers again), and its partial file or playlist folder to the pool process that
    replaces it."""
    kill_the_first_download(cluster, ledger, heavy_media, heavy_media_dir, f"kill_in_{fmt}_prefetch", fmt=fmt)
    count("faults")
    finish(cluster, ledger)


def kill_the_first_download(
    cluster: Cluster,
    ledger: Ledger,
    media: MediaServer,
    media_dir: Path,
    stream_id: str,
    fmt: str = "mp4",
    **worker_env: str,
) -> None:
    """Send a broadcast of slow media and kill the worker's process that first downloads it: the
    stitch's with prefetch off, else a prefetch's. The media is quick again once it is dead."""
    cluster.serve()
    worker = cluster.worker("w1", **worker_env)
    media.rate = 1_000_000  # ~8 s per clip
    names = [f"{name.removesuffix('.mp4')}/index.m3u8" for name in BIG] if fmt == "hls" else BIG
    for body in bodies(media.url, media_dir, stream_id, names, fmt):
        ledger.post(body)
    kill(wait_for(lambda: connected_to(worker.pid, media.port), what="a download", timeout=30))
    media.rate = None


def kill_at_ffmpeg(cluster: Cluster) -> None:
    """Freeze the first ffmpeg working for the cluster, kill -9 its worker, check ffmpeg dies with it."""
    ffmpeg = wait_for(
        lambda: next(p for p in ffmpegs(cluster.work) if p.name() == "ffmpeg" and p.status() != "stopped"),
        what="ffmpeg",
        timeout=30,
    )
    ffmpeg.suspend()  # frozen mid-work: only its worker's death can end it now
    kill(ffmpeg.parent())
    wait_for(lambda: gone([ffmpeg]), what="ffmpeg to die with its worker", timeout=5)


def test_worker_killed_during_ffmpeg_leaves_no_ffmpeg(
    cluster: Cluster, ledger: Ledger, heavy_media: MediaServer, heavy_media_dir: Path, count: Counts
) -> None:
    cluster.serve()
    cluster.worker("w1")
    # The small clip is re-encoded to join the two 1280x720 ones: ffmpeg runs for seconds.
    for body in bodies(heavy_media.url, heavy_media_dir, "kill_in_ffmpeg", ["big0.mp4", "small.mp4", "big1.mp4"]):
        ledger.post(body)
    kill_at_ffmpeg(cluster)
    count("faults")
    finish(cluster, ledger)


def test_worker_killed_during_upload_aborts_the_stray_multipart_upload(
    cluster: Cluster, ledger: Ledger, heavy_media: MediaServer, heavy_media_dir: Path, s3_proxy: Proxy, count: Counts
) -> None:
    cluster.serve()
    worker = cluster.worker("w1")
    s3_proxy.set("pass", rate=2_000_000)  # the ~23 MB archive goes up in 16 MiB parts, for seconds
    for body in bodies(heavy_media.url, heavy_media_dir, "kill_in_upload", BIG):
        ledger.post(body)
    wait_for(lambda: b"partNumber=" in s3_proxy.seen or 1 / 0, what="a multipart upload", timeout=60)
    kill(connected_to(worker.pid, s3_proxy.port))
    count("faults")
    s3_proxy.set("pass")
    finish(cluster, ledger)
    store = ledger.store
    assert isinstance(store, S3Store)
    uploads = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix).get("Uploads", [])
    assert uploads == []


def test_a_stitch_that_kills_its_worker_every_time_fails_after_max_attempts(
    cluster: Cluster, ledger: Ledger, heavy_media: MediaServer, heavy_media_dir: Path, count: Counts
) -> None:
    """ffmpeg hangs on the broadcast and its worker dies (as under the OOM killer or Celery's
    hard time limit: kill -9, no cleanup), on every attempt."""
    cluster.serve()
    cluster.worker("w1", max_attempts="2")
    for body in bodies(heavy_media.url, heavy_media_dir, "poison", ["big0.mp4", "small.mp4", "big1.mp4"]):
        ledger.post(body)
    for _ in range(2):
        kill_at_ffmpeg(cluster)
        count("faults")
    finish(cluster, ledger, outcome="failed", reason="stitching stopped 2 times without finishing")


def test_the_time_limit_given_to_recorder_worker_stops_a_stitch_that_runs_too_long(
    cluster: Cluster, ledger: Ledger, heavy_media: MediaServer, heavy_media_dir: Path, count: Counts
) -> None:
    """``--time-limit`` on the command line is the limit (a task_time_limit in Celery's config
    used to override it); a worker without one, restarted on the same machine, takes over."""
    cluster.serve()
    limited = cluster.worker("w1", "--time-limit=2", concurrency=1)
    heavy_media.rate = 2_000_000  # ~22 MB of downloads: ~11 s
    for body in bodies(heavy_media.url, heavy_media_dir, "time_limit", BIG):
        ledger.post(body)
    stopped = "Hard time limit (2.0s) exceeded for recorder.stitch"
    wait_for(lambda: stopped in cluster.log_text() or 1 / 0, what="the time limit", timeout=30)
    count("faults")
    kill(limited)
    heavy_media.rate = None
    cluster.worker("w2", work_dir=str(cluster.work / "w1"))
    finish(cluster, ledger)


def test_a_redelivered_stitch_is_stopped_by_the_lease(
    cluster: Cluster, ledger: Ledger, heavy_media: MediaServer, heavy_media_dir: Path, count: Counts
) -> None:
    cluster.serve()
    worker = cluster.worker("w1", prefetch="0")  # the stitch downloads
    heavy_media.rate = 2_000_000
    for body in bodies(heavy_media.url, heavy_media_dir, "redelivered", BIG):
        ledger.post(body)
    wait_for(lambda: connected_to(worker.pid, heavy_media.port), what="a download", timeout=30)
    (broadcast,) = ledger.broadcasts()
    again = publish(cluster, STITCH, broadcast.id)  # what Redis does after its visibility timeout
    count("faults")
    assert wait_for(lambda: outcome_logged(cluster, again), what="the redelivered task") == "skipped"
    heavy_media.rate = None
    finish(cluster, ledger)


def test_two_workers_given_the_same_broadcast_archive_it_once(
    cluster: Cluster, ledger: Ledger, heavy_media: MediaServer, heavy_media_dir: Path, count: Counts
) -> None:
    cluster.serve(settle_seconds="3600")  # nothing settles by itself: the test hands the work out
    cluster.worker("w1", concurrency=1, settle_seconds="3600")
    cluster.worker("w2", beat=False, concurrency=1, settle_seconds="3600")
    heavy_media.rate = 4_000_000
    for body in bodies(heavy_media.url, heavy_media_dir, "two_workers", BIG):
        ledger.post(body)
    (broadcast,) = wait_for(ledger.grouped, what="the broadcast")
    answer = requests.post(f"{cluster.base}/v1/broadcasts/{broadcast.id}/stitch", headers=auth(), timeout=10)
    assert answer.status_code == 202
    twice = [publish(cluster, STITCH, broadcast.id), publish(cluster, STITCH, broadcast.id)]
    count("faults", 2)
    outcomes = [wait_for(partial(outcome_logged, cluster, task), what="both copies", timeout=60) for task in twice]
    assert sorted(outcomes) in (["archived", "skipped"], ["skipped", "skipped"])
    finish(cluster, ledger)
    assert cluster.log_text().count("'archived'") == 1


def test_several_workers_archive_a_stream_of_broadcasts_exactly_once(
    cluster: Cluster, ledger: Ledger, media_url: str, media_dir: Path
) -> None:
    cluster.serve()
    for n in range(3):
        cluster.worker(f"w{n}", beat=n == 0)
    sends = [b for s in range(12) for b in bodies(media_url, media_dir, f"stream_{s:02d}", SMALL[: 1 + s % 3])]
    sends += random.sample(sends, 8)  # Tencent's retries
    random.shuffle(sends)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(ledger.post, sends))
    finish(cluster, ledger, timeout=120)
    assert len(ledger.broadcasts()) == 12
    logs = [log.read_text() for log in cluster.logs if log.name.startswith("w")]
    assert sum(log.count("'archived'") for log in logs) == 12
    assert sum(1 for log in logs if "'archived'" in log) >= 2  # the work was shared


def test_storage_refusing_is_retried_with_backoff_and_never_archived_without_an_object(
    cluster: Cluster, ledger: Ledger, media_url: str, media_dir: Path, s3_proxy: Proxy, count: Counts
) -> None:
    s3_proxy.set("refuse")
    cluster.serve()
    cluster.worker("w1", retry_seconds="60")
    for body in bodies(media_url, media_dir, "storage_down", SMALL):
        ledger.post(body)
    count("faults")

    delays: dict[int, float] = {}  # attempt -> how long it waited before the next
    statuses: set[str] = set()

    def retried() -> None:
        (broadcast,) = ledger.broadcasts()
        statuses.add(broadcast.status)
        waiting = broadcast.lease_owner is None and broadcast.next_attempt_at is not None  # not mid-attempt
        if waiting and (broadcast.error or "").startswith("retrying: head s3://"):
            delays[broadcast.attempts] = broadcast.next_attempt_at - broadcast.updated_at
        if len(delays) < 3:
            raise RuntimeError("not yet")

    wait_for(retried, what="three refused attempts", timeout=60)
    assert statuses <= {"settling", "stitching"}  # never archived while storage refuses
    waits = [delays[n] for n in sorted(delays)]
    assert waits == sorted(waits) and waits[-1] > waits[0]  # backing off
    s3_proxy.set("pass")
    finish(cluster, ledger, timeout=60)


def test_redis_down_callbacks_are_answered_and_archived_when_it_returns(
    cluster: Cluster, ledger: Ledger, redis: RedisProcess, media_url: str, media_dir: Path, count: Counts
) -> None:
    cluster.serve()
    cluster.worker("w1")
    redis.kill()
    count("faults")
    began = time.monotonic()
    for body in bodies(media_url, media_dir, "redis_down", SMALL):
        ledger.post(body)
    assert time.monotonic() - began < 5  # answered at once, not after broker timeouts
    redis.start()
    finish(cluster, ledger, timeout=90)


def test_redis_restarted_mid_queue_loses_nothing(
    cluster: Cluster, ledger: Ledger, redis: RedisProcess, media_url: str, media_dir: Path, count: Counts
) -> None:
    cluster.serve()
    for body in bodies(media_url, media_dir, "redis_restart", SMALL):
        ledger.post(body)  # queued in Redis: no worker yet
    redis.kill()  # memory only: the queue is gone
    redis.start()
    count("faults")
    cluster.worker("w1")
    finish(cluster, ledger, timeout=60)


def test_web_killed_between_commit_and_publish_the_sweep_delivers(
    cluster: Cluster, ledger: Ledger, redis: RedisProcess, media_url: str, media_dir: Path, count: Counts
) -> None:
    blackhole = Proxy(("127.0.0.1", redis.port))
    blackhole.set("hang")  # the background publish after the commit waits on a broker that never answers
    serve = cluster.serve(broker_url=f"redis://{blackhole.address}/0")
    cluster.worker("w1")
    (body,) = bodies(media_url, media_dir, "web_killed", SMALL[:1])
    answer = requests.post(f"{cluster.base}/v1/callbacks/tencent", json=body, timeout=30)
    assert answer.status_code == 200  # answered once committed, while its publish hangs
    ledger.answered[f"tencent:{body['file_id']}"] = body["stream_id"]
    assert stored(ledger)
    os.killpg(serve.pid, signal.SIGKILL)  # the publish never happens
    count("faults")
    count("callbacks")
    blackhole.close()
    wait_for(ledger.finished, what="the sweep to deliver it", timeout=60)
    cluster.serve()  # a retry of the callback all the same: a duplicate, answered 200
    ledger.post(body)
    finish(cluster, ledger)


def stored(ledger: Ledger) -> bool:
    with ledger.sessions() as session:
        return session.execute(select(func.count()).select_from(Event)).scalar_one() > 0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_database_down_is_503_then_one_fragment_on_replay(
    cluster: Cluster, ledger: Ledger, database_url: str, media_url: str, media_dir: Path, count: Counts
) -> None:
    url = make_url(database_url)
    database = Proxy((url.host, url.port))
    cluster.serve(database_url=url.set(host="127.0.0.1", port=database.port).render_as_string(hide_password=False))
    cluster.worker("w1")
    (body,) = bodies(media_url, media_dir, "database_down", SMALL[:1])
    database.set("refuse")
    count("faults")
    ledger.post(body, expect=503, reason="cannot store the callback", bad=False)
    database.set("pass")
    ledger.post(body)
    finish(cluster, ledger)
    database.close()
