"""Sample media made with ffmpeg: a test pattern and a sine tone, H.264/AAC.

Used by ``recorder demo``, the tests and the benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import ffmpeg

# Container name -> ffmpeg muxer where the two differ.
_MUXERS = {"aac": "adts", "m4a": "mp4", "ts": "mpegts"}


def make_clip(
    path: Path,
    seconds: float,
    *,
    size: str = "320x240",
    rate: int = 25,
    tone: int = 440,
    fmt: str = "mp4",
    audio: bool = True,
    video: bool = True,
    faststart: bool = False,
    audio_seconds: float | None = None,
    ts_offset: float = 0.0,
    hls_time: float = 2,
) -> Path:
    """Write a clip; fmt is mp4, m4a, flv, ts, aac (ADTS) or hls (path is the .m3u8).

    Without ``faststart`` an MP4 keeps its moov at the end, so cutting one short leaves no moov.
    ``audio_seconds`` makes the audio shorter (or longer) than the video; ``ts_offset`` starts
    the timestamps there instead of at 0; ``hls_time`` is the HLS segment length.
    """
    streams, options = [], {}
    if video:
        streams.append(ffmpeg.input(f"testsrc=size={size}:rate={rate}:duration={seconds}", f="lavfi").video)
        options |= {"vcodec": "libx264", "preset": "ultrafast", "pix_fmt": "yuv420p", "g": rate}
    if audio:
        tone_source = f"sine=frequency={tone}:sample_rate=44100:duration={audio_seconds or seconds}"
        streams.append(ffmpeg.input(tone_source, f="lavfi").audio)
        options |= {"acodec": "aac"}
    if faststart:
        options["movflags"] = "+faststart"
    if ts_offset:
        options["output_ts_offset"] = ts_offset
    if fmt == "hls":
        options["hls_time"] = hls_time
    ffmpeg.output(*streams, str(path), format=_MUXERS.get(fmt, fmt), **options).global_args(
        "-nostdin", "-hide_banner"
    ).overwrite_output().run(quiet=True)
    return path
