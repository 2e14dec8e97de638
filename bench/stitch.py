"""Stitch step per format: ours (plan, ffmpeg, verification) against the best hand-written
ffmpeg command for that format, on the same local files, in turns.

"Ours" is what the worker does once the fragments are on disk and probed: ``stitch.stitch``
then ``stitch.verify`` with the service's default tolerances. "With probing" adds the probes,
run four at a time as the worker runs them (one per download thread).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import media
from bench.common import CACHE, FFMPEG, Row, concat_copy, interleaved, main, median, step, timed
from recorder import pipeline, stitch
from recorder.config import Settings

FORMATS = ("mp4", "flv", "hls", "aac")


def hand_command(fmt: str, paths: list[Path], work: Path) -> tuple[list[str], Path]:
    """The command a person would write: concat demuxer, stream copy, +faststart.

    For HLS the concat *protocol* over every .ts segment in order: one MPEG-TS stream, the
    fastest way ffmpeg has (the concat demuxer over the segments leaves a gap at each one).
    """
    out = work / ("hand.m4a" if fmt == "aac" else "hand.mp4")
    if fmt == "hls":
        segments = [str(ts) for path in paths for ts in sorted(path.parent.glob("*.ts"))]
        source = "concat:" + "|".join(segments)
        return [*FFMPEG, "-i", source, "-c", "copy", "-movflags", "+faststart", str(out)], out
    return concat_copy(paths, out), out


def duration_of(path: Path) -> float:
    cmd = ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)]
    return float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def probe_all(paths: list[Path], fmt: str) -> list[stitch.ProbeFacts]:
    with ThreadPoolExecutor(max_workers=Settings().download_workers) as pool:  # as the worker probes
        return list(pool.map(lambda path: stitch.probe(path, fmt=fmt), paths))


def bench_format(fmt: str, *, seconds: int, rounds: int, work: Path) -> list[Row]:
    paths = media.fragments(fmt, 4, seconds)
    size_mb = media.total_bytes(paths) / 1e6
    settings = Settings()
    facts = probe_all(paths, fmt)
    inputs = [
        stitch.StitchInput(path, f, f"fragment {i}", fmt) for i, (path, f) in enumerate(zip(paths, facts, strict=True))
    ]
    expected = stitch.expected_duration(inputs)
    output = work / f"ours.{stitch.output_extension(inputs)}"
    results: list[stitch.StitchResult] = []

    def ours() -> None:
        result = stitch.stitch(inputs, output)
        pipeline.verify_stitched(settings, result, inputs)
        results.append(result)

    def ours_probing() -> None:
        nonlocal inputs
        fresh = probe_all(paths, fmt)
        inputs = [stitch.StitchInput(i.path, f, i.label, fmt) for i, f in zip(inputs, fresh, strict=True)]
        ours()

    cmd, hand_out = hand_command(fmt, paths, work)

    def hand() -> None:
        if fmt != "hls":  # writing the list is part of the script
            hand_command(fmt, paths, work)
        subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)

    with step(f"stitch {fmt}: {len(paths)} fragments, {size_mb:.0f} MB, {rounds} rounds"):
        ours(), hand()  # warm the page cache and the code paths
        times = interleaved(rounds, ours=ours, hand=hand, ours_probing=ours_probing)
    t_ours, t_hand, t_probing = (median(times[k]) for k in ("ours", "hand", "ours_probing"))
    label = fmt.upper()
    rows = [
        Row("stitch", f"{label}: stitch step (probes done)", t_ours, t_hand, "s", target=1.15),
        Row("stitch", f"{label}: stitch step with probing", t_probing, t_hand, "s", target=1.5),
    ]
    ours_duration = results[-1].duration
    hand_error = abs(duration_of(hand_out) - expected) * 1000
    rows.append(
        Row(
            "stitch",
            f"{label}: |output - fragments' sum| duration",
            abs(ours_duration - expected) * 1000,
            hand_error,
            "ms",
            check="<= 50 ms",
            met=abs(ours_duration - expected) <= 0.050,
        )
    )
    if fmt == "mp4":
        rows.append(
            Row(
                "stitch",
                f"MP4: stitch step throughput ({size_mb:.0f} MB)",
                size_mb / t_ours,
                size_mb / t_hand,
                "MB/s",
                check=">= 150 MB/s",
                met=size_mb / t_ours >= 150,
            )
        )
        t_cat = median([timed(lambda: _cat(paths, work / "cat.bin")) for _ in range(rounds)])
        rows.append(Row("stitch", "MP4: stitch step vs cat of the bytes (context)", t_ours, t_cat, "s"))
    return rows


def bench_long(*, copies: int, seconds: int, rounds: int, work: Path) -> list[Row]:
    """MP4 again on four long fragments (those of bench.memory): verification is a fixed cost per
    join, so here the step runs at stream-copy speed."""
    from bench.memory import broadcast_files

    paths = broadcast_files(copies, seconds)
    size_mb = media.total_bytes(paths) / 1e6
    inputs = [
        stitch.StitchInput(p, f, f"fragment {i}", "mp4")
        for i, (p, f) in enumerate(zip(paths, probe_all(paths, "mp4"), strict=True))
    ]
    output = work / "ours-long.mp4"

    def ours() -> None:
        stitch.verify(stitch.stitch(inputs, output), stitch.expected_duration(inputs))

    cmd, _ = hand_command("mp4", paths, work)
    with step(f"stitch mp4: 4 long fragments, {size_mb:,.0f} MB, {rounds} rounds"):
        times = interleaved(rounds, ours=ours, hand=lambda: subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL))
    t_ours, t_hand = median(times["ours"]), median(times["hand"])
    output.unlink(missing_ok=True)
    return [
        Row("stitch", f"MP4, {size_mb / 1000:.1f} GB: stitch step (context)", t_ours, t_hand, "s"),
        Row(
            "stitch", f"MP4, {size_mb / 1000:.1f} GB: throughput (context)", size_mb / t_ours, size_mb / t_hand, "MB/s"
        ),
    ]


def _cat(paths: list[Path], out: Path) -> None:
    with out.open("wb") as sink:
        for path in paths:
            with path.open("rb") as source:
                shutil.copyfileobj(source, sink, 1 << 20)


def body(args: argparse.Namespace) -> list[Row]:
    seconds, rounds = (10, 2) if args.quick else (60, 5)
    work = CACHE / "work-stitch"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        rows = [row for fmt in FORMATS for row in bench_format(fmt, seconds=seconds, rounds=rounds, work=work)]
        copies, long_seconds = (2, 10) if args.quick else (13, 60)
        return rows + bench_long(copies=copies, seconds=long_seconds, rounds=2, work=work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main("stitch", body, __doc__ or "")
