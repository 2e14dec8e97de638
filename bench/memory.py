"""Memory: peak memory of the worker's whole process tree (Celery's main process, which also
schedules the sweep, its pool processes, and the ffmpeg/ffprobe they start) while it archives
a 1 GB and a 2 GB broadcast (4 long MP4 fragments each, built by stream-copying the clip) from
loopback HTTP into moto's S3, one after the other on the same worker, after a warm-up broadcast.

Sampled from /proc every 20 ms with psutil. The figure is the tree's PSS (proportional set
size: a page shared by N processes counts 1/N in each, so the forked pool processes' shared
pages are not counted N times); the plain sum of RSS is shown beside it. The reference is the
hand-written ``ffmpeg -f concat -c copy +faststart`` over the same local files.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import psutil

from bench import media
from bench.common import CACHE, Row, concat_copy, logs_dir, main, step
from bench.services import (
    BUCKET,
    Database,
    media_server,
    redis_server,
    s3_server,
    send_broadcast,
    serve,
    service_env,
    wait_archived,
    workers,
)

MB = 1e6


class TreeSampler:
    """Peak PSS and RSS of a process and all its descendants."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_pss = self.peak_rss = 0
        self.last_parts: dict[str, int] = {}
        self.peak_parts: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> tuple[int, int]:
        pss = rss = 0
        parts: dict[str, int] = {}
        for proc in [self.root, *self.root.children(recursive=True)]:
            try:
                info = proc.memory_full_info()
                name = proc.name()
            except (psutil.NoSuchProcess, psutil.AccessDenied, FileNotFoundError):
                continue  # an ffprobe that just ended
            pss += info.pss
            rss += info.rss
            parts[name] = parts.get(name, 0) + info.pss
        self.last_parts = parts
        return pss, rss

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            pss, rss = self.sample()
            if pss > self.peak_pss:
                self.peak_parts = self.last_parts
            self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)

    @property
    def composition(self) -> str:
        return ", ".join(f"{name} {size / MB:.0f} MB" for name, size in sorted(self.peak_parts.items()))

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def hand_peak_rss(files: list[Path], work: Path) -> int:
    """Peak RSS of the hand-written ffmpeg stream copy over the same files, from the kernel."""
    out = work / "hand.mp4"
    proc = subprocess.Popen(concat_copy(files, out), stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError("the hand-written ffmpeg failed")
    return usage.ru_maxrss * 1024  # KiB on Linux


def broadcast_files(copies: int, seconds: int) -> list[Path]:
    """Four fragments of ``copies`` x the clip, as hard links to one long file (served under four names)."""
    long = media.long_fragment(copies, seconds)
    folder = CACHE / f"memory-{copies}x{seconds}s"
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(4):
        path = folder / f"f{i}.mp4"
        if not path.exists():
            os.link(long, path)
        files.append(path)
    return files


def body(args: argparse.Namespace) -> list[Row]:
    seconds, sizes = (10, (2, 4)) if args.quick else (60, (13, 26))  # 13 x 20 MB x 4 = 1 GB
    builds = {copies: broadcast_files(copies, seconds) for copies in sizes}
    warmup = media.fragments("mp4", 4, seconds)
    results: dict[int, tuple[int, int, int, float, int, str]] = {}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="memory-", dir=CACHE)))
        logs = logs_dir("memory")
        endpoint = stack.enter_context(s3_server(logs))
        broker = stack.enter_context(redis_server())
        base_media = stack.enter_context(media_server(CACHE, logs))  # serves every folder below
        env = service_env(
            tmp,
            broker=broker,
            media=base_media,
            storage=f"s3://{BUCKET}/memory",
            endpoint=endpoint,
            RECORDER_DOWNLOAD_TIMEOUT="120",
        )
        base = stack.enter_context(serve(env, logs, workers=1))
        (pid,) = stack.enter_context(workers(env, logs))
        db = Database(env["RECORDER_DATABASE_URL"])
        stack.callback(db.close)

        def archive(files: list[Path], seconds: float) -> tuple[float, int]:
            stream_id = f"mem_{uuid.uuid4().hex[:8]}"
            names = [str(f.relative_to(CACHE)) for f in files]
            began = time.monotonic()
            send_broadcast(base, base_media, stream_id, files, seconds, names=names)
            wait_archived(db, [stream_id], timeout=900, poll=0.2)
            return time.monotonic() - began, db.archive_of(stream_id)[1]

        # Warm-up: both pool processes import and connect (the sweep runs on either), one archives.
        archive(warmup, seconds)
        time.sleep(2)
        for copies, files in builds.items():  # the same worker tree for both sizes
            size = media.total_bytes(files)
            idle_pss, _ = TreeSampler(pid).sample()
            with step(f"memory: a {size / MB:,.0f} MB broadcast"), TreeSampler(pid) as sampler:
                took, stored = archive(files, copies * seconds)
            if stored < size * 0.99:
                raise RuntimeError(f"the archive is {stored} bytes for {size} bytes of fragments")
            hand = hand_peak_rss(files, tmp)
            results[copies] = (sampler.peak_pss, sampler.peak_rss, hand, took, idle_pss, sampler.composition)
    rows = []
    small, large = sizes
    for copies in sizes:
        pss, rss, hand, took, idle, parts = results[copies]
        gb = media.total_bytes(builds[copies]) / 1e9
        rows.append(
            Row(
                "memory",
                f"worker tree peak PSS, {gb:.2f} GB broadcast",
                pss / MB,
                hand / MB,
                "MB",
                check="< 300 MB",
                met=pss < 300 * MB,
                note=f"PSS at the peak: {parts}; sum of RSS {rss / MB:.0f} MB; idle tree {idle / MB:.0f} MB PSS;"
                f" archived in {took:.1f} s",
            )
        )
    ratio = results[large][0] / results[small][0]
    rows.append(
        Row("memory", "peak PSS: 2 GB broadcast / 1 GB broadcast", ratio, None, "x", check="<= 1.2x", met=ratio <= 1.2)
    )
    return rows


if __name__ == "__main__":
    main("memory", body, __doc__ or "")
