"""End to end: from the last callback answered to the archive stored in S3, with ``recorder serve``
and ``recorder worker`` as processes (settle 1 s, sweep every 1 s), media over loopback HTTP and
moto's S3 server; against a hand pipeline over the same media and S3 server: download the
fragments in parallel, ``ffmpeg -f concat -c copy +faststart``, boto3 ``upload_file``.

The service also verifies the output, hashes everything, writes a manifest and records it all;
the hand pipeline does none of that.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import requests

from bench import media
from bench.common import CACHE, Row, concat_copy, logs_dir, main, median, step
from bench.services import (
    BUCKET,
    Database,
    media_server,
    redis_server,
    s3_client,
    s3_server,
    send_broadcast,
    serve,
    service_env,
    wait_archived,
    workers,
)

SETTLE = 1.0


def hand_pipeline(urls: list[str], s3, work: Path, key: str) -> None:  # type: ignore[no-untyped-def]
    """What a person's script does: parallel downloads, one ffmpeg stream copy, one upload."""
    work.mkdir(parents=True, exist_ok=True)

    def download(url: str) -> Path:
        path = work / url.rsplit("/", 1)[-1]
        with requests.get(url, stream=True, timeout=30) as answer, path.open("wb") as sink:
            answer.raise_for_status()
            for chunk in answer.iter_content(1 << 20):
                sink.write(chunk)
        return path

    with ThreadPoolExecutor(max_workers=4) as pool:
        paths = list(pool.map(download, urls))
    out = work / "out.mp4"
    subprocess.run(concat_copy(paths, out), check=True)
    s3.upload_file(str(out), BUCKET, key)
    shutil.rmtree(work)


def body(args: argparse.Namespace) -> list[Row]:
    seconds, rounds = (10, 1) if args.quick else (60, 3)
    files = media.fragments("mp4", 4, seconds)
    size_mb = media.total_bytes(files) / 1e6
    names = [f.name for f in files]
    ours: list[float] = []
    hand: list[float] = []
    CACHE.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="e2e-", dir=CACHE)))
        logs = logs_dir("e2e")
        base_media = stack.enter_context(media_server(files[0].parent, logs))
        endpoint = stack.enter_context(s3_server(logs))
        broker = stack.enter_context(redis_server())
        env = service_env(
            tmp,
            broker=broker,
            media=base_media,
            storage=f"s3://{BUCKET}/e2e",
            endpoint=endpoint,
            RECORDER_SETTLE_SECONDS=str(SETTLE),
        )
        base = stack.enter_context(serve(env, logs))
        stack.enter_context(workers(env, logs))
        db = Database(env["RECORDER_DATABASE_URL"])
        stack.callback(db.close)
        s3 = s3_client(endpoint)
        urls = [f"{base_media}/{name}" for name in names]

        def run_ours() -> float:
            stream_id = f"e2e_{uuid.uuid4().hex[:8]}"
            answered = send_broadcast(base, base_media, stream_id, files, seconds, names=names)
            done = wait_archived(db, [stream_id], timeout=300)[stream_id]
            key, size, _ = db.archive_of(stream_id)
            if s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] != size:
                raise RuntimeError(f"the archive in S3 is not {size} bytes")
            return done - answered

        def run_hand() -> float:
            began = time.monotonic()
            hand_pipeline(urls, s3, tmp / "hand", f"hand/{uuid.uuid4().hex}.mp4")
            return time.monotonic() - began

        with step(f"e2e: 4 x {seconds} s MP4 ({size_mb:.0f} MB), warm-up and {rounds} rounds"):
            run_ours(), run_hand()  # warm-up: worker imports, page cache, S3 connections
            for _ in range(rounds):
                ours.append(run_ours())
                hand.append(run_hand())
    # The worker's own time per broadcast (lease, downloads, probes, stitch, verify, upload, record),
    # as Celery logs it: the rest of ours is the settle wait and the sweep's tick.
    tasks = [
        float(m)
        for m in re.findall(r"recorder\.stitch\[[^]]*\] succeeded in ([0-9.]+)s", (logs / "worker-0.log").read_text())
    ]
    t_ours, t_hand = median(ours), median(hand)
    figure = f"last callback -> archive in S3, 4 x {seconds} s MP4 ({size_mb:.0f} MB)"
    return [
        Row("e2e", figure, t_ours, t_hand, "s", target=1.5),
        Row("e2e", "  the same less the 1 s settle wait (context)", t_ours - SETTLE, t_hand, "s"),
        Row("e2e", "  the worker's stitch task alone (context)", median(tasks[1:]), t_hand, "s"),
    ]


if __name__ == "__main__":
    main("e2e", body, __doc__ or "")
