"""Scale: eight broadcasts (4 x 60 s MP4 fragments each) with one worker process, then with two,
on SQLite and then on PostgreSQL. Each worker is a ``recorder worker --concurrency=1`` process
(the second with ``--no-beat``), as N workers on N machines would run; they share the database,
Redis, the media server and the archive directory.

Throughput counts from the first callback sent to the last broadcast archived, the 1 s settle
included: the workers fetch and probe each fragment as its callback is handled (prefetch), so
part of the work is done while the broadcasts settle. Over the same window,
the workers' CPU time (their process trees, ffmpeg and ffprobe included) over the wall time says
how many cores they kept busy: a worker that keeps c cores busy alone leaves two workers on two
cores at most ~2/c times its throughput. The archive goes to a
local directory: an S3 server on the same two cores would compete with the workers it serves.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import psutil

from bench import media
from bench.common import CACHE, Row, logs_dir, main, step
from bench.services import (
    Database,
    media_server,
    postgres,
    redis_server,
    send_broadcast,
    serve,
    service_env,
    workers,
)

BROADCASTS = 8


def run_batch(
    db: Database, base: str, base_media: str, files: list[Path], seconds: int, count: int, pids: list[int]
) -> tuple[float, float]:
    """Send ``count`` broadcasts to the workers ``pids``: seconds from the first callback sent to
    the last broadcast archived, and the cores the workers' process trees kept busy meanwhile."""
    names = [f.name for f in files]
    stream_ids = [f"scale_{uuid.uuid4().hex[:8]}" for _ in range(count)]
    start, cpu_at_start = time.monotonic(), cpu_seconds(pids)
    for stream_id in stream_ids:
        send_broadcast(base, base_media, stream_id, files, seconds, names=names)
    deadline = start + 600
    while True:
        statuses = db.statuses(stream_ids)
        now = time.monotonic()
        if len(statuses) == count and all(s == "archived" for s in statuses.values()):
            return now - start, (cpu_seconds(pids) - cpu_at_start) / (now - start)
        if now > deadline:
            raise TimeoutError(f"not archived within 600 s: {statuses}")
        time.sleep(0.05)


def cpu_seconds(pids: list[int]) -> float:
    """CPU time used so far by these workers' process trees, the ffmpeg and ffprobe runs they reaped included."""
    total = 0.0
    for pid in pids:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue  # an ffprobe that just ended: its parent has it now
            total += times.user + times.system + times.children_user + times.children_system
    return total


def body(args: argparse.Namespace) -> list[Row]:
    seconds = 10 if args.quick else 60
    count = 4 if args.quick else BROADCASTS
    files = media.fragments("mp4", 4, seconds)
    rows = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scale-", dir=CACHE)))
        logs = logs_dir("scale")
        base_media = stack.enter_context(media_server(files[0].parent, logs))
        broker = stack.enter_context(redis_server())
        for backend in ("sqlite", "postgresql"):
            with ExitStack() as run:
                url = run.enter_context(postgres()) if backend == "postgresql" else None
                env = service_env(tmp / backend, broker=broker, media=base_media, database=url)
                base = run.enter_context(serve(env, logs, workers=1))
                db = Database(env["RECORDER_DATABASE_URL"])
                run.callback(db.close)
                took, busy = {}, {}
                for n in (1, 2):
                    with (
                        workers(env, logs, count=n, concurrency=1) as pids,
                        step(f"scale: {backend}, {n} worker(s)"),
                    ):
                        run_batch(db, base, base_media, files, seconds, 1, pids)  # warm-up: imports, connections
                        took[n], busy[n] = run_batch(db, base, base_media, files, seconds, count, pids)
                one, two = count / took[1], count / took[2]
                rows.append(
                    Row(
                        "scale",
                        f"{backend}: broadcasts/min, 2 workers vs 1",
                        two * 60,
                        one * 60,
                        "/min",
                        target=1.6,
                        higher_is_better=True,
                        note=f"{count} broadcasts of 4 x {seconds} s:"
                        f" {took[1]:.1f} s with 1 worker, {took[2]:.1f} s with 2; cores kept busy by the workers:"
                        f" {busy[1]:.2f} by 1, {busy[2]:.2f} by 2 (on {os.cpu_count()} cores, two workers can gain"
                        f" about {os.cpu_count()}/{busy[1]:.2f} = {(os.cpu_count() or 1) / busy[1]:.2f}x)",
                    )
                )
    return rows


if __name__ == "__main__":
    main("scale", body, __doc__ or "")
