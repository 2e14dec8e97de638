"""Bench media, made once with ffmpeg and kept under bench/.cache.

A recording-like clip: 1280x720 H.264 High at ~2.5 Mbit/s (a 2 s GOP, as CSS records),
AAC-LC 128 kbit/s 44.1 kHz stereo; a little noise keeps the encoder from squeezing the test
pattern to nothing, so 60 s weigh ~20 MB, as a real recording does. Fragments in the other
formats, the odd-resolution fragment and the long fragments are stream copies (or, for the
odd one, a re-encode) of that clip.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.common import CACHE, FFMPEG, concat_copy, run

SIZE = "1280x720"


def _x264(bitrate: str, bufsize: str) -> list[str]:
    """H.264 High, veryfast, a 2 s GOP, capped at ``bitrate``."""
    return [
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-profile:v",
        "high",
        "-g",
        "50",
        "-b:v",
        bitrate,
        "-maxrate",
        bitrate,
        "-bufsize",
        bufsize,
    ]


def _made(path: Path, make) -> Path:  # type: ignore[no-untyped-def]
    """``make(tmp)`` writes ``tmp``; it becomes ``path`` only when complete."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    make(tmp)
    tmp.rename(path)
    return path


def clip(seconds: int, size: str = SIZE, bitrate: str = "2500k") -> Path:
    """The source clip: test pattern plus noise, and a tone."""
    width, height = size.split("x")

    def make(tmp: Path) -> None:
        run(
            [
                *FFMPEG,
                "-f",
                "lavfi",
                "-i",
                f"testsrc2=size={size}:rate=25:duration={seconds},noise=alls=8:allf=t",
                "-f",
                "lavfi",
                "-i",
                f"sine=frequency=440:sample_rate=44100:duration={seconds}",
                *_x264(bitrate, "5000k"),
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-b:a",
                "128k",
                "-ac",
                "2",
                "-movflags",
                "+faststart",
                "-f",
                "mp4",
                str(tmp),
            ]
        )

    return _made(CACHE / f"clip-{width}x{height}-{seconds}s.mp4", make)


def fragments(fmt: str, count: int, seconds: int) -> list[Path]:
    """``count`` fragments of ``seconds`` each in ``fmt`` (mp4, flv, hls, aac), as CSS records them.

    HLS fragments are directories with an index.m3u8 and 2 s TS segments; the paths returned are
    the playlists.
    """
    source = clip(seconds)
    folder = CACHE / f"fragments-{seconds}s"
    paths = []
    for i in range(count):
        if fmt == "mp4":
            paths.append(_made(folder / f"f{i}.mp4", lambda tmp: shutil.copyfile(source, tmp)))
        elif fmt == "flv":
            paths.append(
                _made(
                    folder / f"f{i}.flv",
                    lambda tmp: run([*FFMPEG, "-i", str(source), "-c", "copy", "-f", "flv", str(tmp)]),
                )
            )
        elif fmt == "aac":
            paths.append(
                _made(
                    folder / f"f{i}.aac",
                    lambda tmp: run([*FFMPEG, "-i", str(source), "-vn", "-c:a", "copy", "-f", "adts", str(tmp)]),
                )
            )
        elif fmt == "hls":

            def make(tmp: Path) -> None:
                tmp.mkdir()
                run(
                    [
                        *FFMPEG,
                        "-i",
                        str(source),
                        "-c",
                        "copy",
                        "-bsf:v",
                        "h264_mp4toannexb",
                        "-f",
                        "hls",
                        "-hls_time",
                        "2",
                        "-hls_playlist_type",
                        "vod",
                        "-hls_segment_filename",
                        str(tmp / "seg%03d.ts"),
                        str(tmp / "index.m3u8"),
                    ]
                )

            paths.append(_made(folder / f"h{i}", make) / "index.m3u8")
        else:
            raise ValueError(fmt)
    return paths


def odd_fragment(seconds: int, size: str = "960x540") -> Path:
    """The same recording at another resolution (a phone that switched cameras)."""
    source = clip(seconds)
    width, height = size.split("x")

    def make(tmp: Path) -> None:
        run(
            [
                *FFMPEG,
                "-i",
                str(source),
                "-vf",
                f"scale={width}:{height}",
                *_x264("1800k", "3600k"),
                "-c:a",
                "copy",
                "-movflags",
                "+faststart",
                "-f",
                "mp4",
                str(tmp),
            ]
        )

    return _made(CACHE / f"odd-{size}-{seconds}s.mp4", make)


def long_fragment(copies: int, seconds: int = 60) -> Path:
    """One long MP4 fragment: the clip stream-copied ``copies`` times in a row."""
    source = clip(seconds)

    def make(tmp: Path) -> None:
        try:
            run(concat_copy([source] * copies, tmp, muxer="mp4"))
        finally:
            tmp.with_suffix(".txt").unlink(missing_ok=True)  # the listing concat_copy wrote

    return _made(CACHE / f"long-{copies}x{seconds}s.mp4", make)


def total_bytes(paths: list[Path]) -> int:
    """Bytes of the fragments (an HLS playlist counts with its segments)."""
    total = 0
    for path in paths:
        total += sum(p.stat().st_size for p in path.parent.iterdir()) if path.suffix == ".m3u8" else path.stat().st_size
    return total
