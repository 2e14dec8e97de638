"""Mismatch cost: four 60 s fragments, the third at 960x540 instead of 1280x720 (a phone that
switched cameras). Ours (stitch + verify, probes done) re-encodes only that fragment to the
others' parameters and stream-copies the join; the reference is the same by hand: one
``ffmpeg ... -vf scale -c:v libx264 -preset veryfast`` of the odd fragment, then the concat
demuxer stream copy of all four. The whole-broadcast re-encode (concat filter, libx264
veryfast) is timed once beside it, for contrast.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time

from bench import media
from bench.common import CACHE, FFMPEG, Row, concat_copy, interleaved, main, median, step, timed
from recorder import pipeline, stitch
from recorder.config import Settings
from recorder.stitch import _join

ODD = 2


class EncodeTimer:
    """Times the re-encodes inside our stitch (ffmpeg runs whose command names libx264)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._run = _join.run

    def __enter__(self) -> EncodeTimer:
        def run(cmd, deadline, *, subject):  # type: ignore[no-untyped-def]
            began = time.perf_counter()
            try:
                return self._run(cmd, deadline, subject=subject)
            finally:
                if "libx264" in cmd:
                    self.seconds += time.perf_counter() - began

        _join.run = run  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        _join.run = self._run  # type: ignore[assignment]


def body(args: argparse.Namespace) -> list[Row]:
    seconds, rounds = (10, 1) if args.quick else (60, 2)
    files = media.fragments("mp4", 4, seconds)
    files[ODD] = media.odd_fragment(seconds)
    work = CACHE / "work-mismatch"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    settings = Settings()
    inputs = [stitch.StitchInput(f, stitch.probe(f, fmt="mp4"), f"fragment {i}", "mp4") for i, f in enumerate(files)]
    encodes: list[float] = []

    def ours() -> None:
        with EncodeTimer() as timer:
            result = stitch.stitch(inputs, work / "ours.mp4")
        pipeline.verify_stitched(settings, result, inputs)
        if result.mode != "mixed":
            raise RuntimeError(f"expected one re-encoded join, got mode {result.mode}")
        encodes.append(timer.seconds)

    hand_encodes: list[float] = []

    def hand() -> None:
        fixed = work / "odd-720p.mp4"
        encode = [*FFMPEG, "-i", str(files[ODD]), "-vf", "scale=1280:720", "-c:v", "libx264", "-preset", "veryfast"]
        hand_encodes.append(timed(lambda: subprocess.run([*encode, "-c:a", "copy", str(fixed)], check=True)))
        joined = [fixed if i == ODD else f for i, f in enumerate(files)]
        subprocess.run(concat_copy(joined, work / "hand.mp4"), check=True)

    def whole() -> None:
        cmd = [*FFMPEG]
        for f in files:
            cmd += ["-i", str(f)]
        scaled = "".join(f"[{i}:v]scale=1280:720,setsar=1[v{i}];" for i in range(len(files)))
        joined = "".join(f"[v{i}][{i}:a]" for i in range(len(files)))
        graph = f"{scaled}{joined}concat=n={len(files)}:v=1:a=1[v][a]"
        cmd += ["-filter_complex", graph, "-map", "[v]", "-map", "[a]", "-c:v", "libx264", "-preset", "veryfast"]
        subprocess.run([*cmd, "-c:a", "aac", "-movflags", "+faststart", str(work / "whole.mp4")], check=True)

    try:
        with step(f"mismatch: 4 x {seconds} s, one at 960x540, {rounds} rounds, then a whole re-encode"):
            times = interleaved(rounds, ours=ours, hand=hand)
            t_whole = timed(whole)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    t_ours, t_hand = median(times["ours"]), median(times["hand"])
    encode = median(encodes)
    return [
        Row("mismatch", "one odd fragment: re-encode it + copy-join all", t_ours, t_hand, "s", target=1.3),
        Row(
            "mismatch",
            f"our re-encode of the odd {seconds} s fragment",
            encode,
            seconds,
            "s",
            target=0.35,
            note=f"hand re-encode of it: {median(hand_encodes):.1f} s",
        ),
        Row(
            "mismatch",
            "whole-broadcast re-encode (context)",
            t_whole,
            t_ours,
            "s",
            note="ratio: the whole re-encode over our stitch with one odd fragment",
        ),
    ]


if __name__ == "__main__":
    main("mismatch", body, __doc__ or "")
