"""The ffmpeg step: probe fragments, join them in stream copy, verify the result.

Commands are built with ffmpeg-python but run with ``subprocess.run`` so every run
has a deadline; ``run`` kills the child on timeout or on any exception (a Celery
soft time limit included), so no ffmpeg outlives its call.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import ffmpeg

from recorder.errors import StitchError

_STDERR_TAIL = 4000  # characters of stderr kept on a StitchError
_CONTEXT = re.compile(r"^\[[^\]]* @ 0x[0-9a-f]+\] ")  # "[mov,mp4,... @ 0x55..] " log prefix
_MOV_OUTPUTS = {".mp4", ".m4a"}


@dataclass(frozen=True)
class ProbeFacts:
    """What ffprobe says about one file; plain data so it can go into a manifest."""

    format_name: str
    duration: float
    start_time: float
    video: dict[str, Any] | None  # codec, profile, width, height, pix_fmt, fps, time_base, start, duration
    audio: dict[str, Any] | None  # codec, profile, sample_rate, channels, channel_layout, start, duration

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeFacts:
        return cls(
            format_name=data["format_name"],
            duration=float(data["duration"]),
            start_time=float(data["start_time"]),
            video=data.get("video"),
            audio=data.get("audio"),
        )


@dataclass(frozen=True)
class StitchInput:
    path: Path
    probe: ProbeFacts
    label: str  # fragment name, used in reasons and manifests


@dataclass(frozen=True)
class Join:
    label: str
    offset: float  # where this input starts in the output, seconds
    duration: float
    mode: str  # "copy"; a re-encoded piece will say so here


@dataclass(frozen=True)
class StitchResult:
    path: Path
    duration: float
    mode: str
    joins: list[Join]
    probe: ProbeFacts
    command: list[str]


def probe(path: Path, *, timeout: float = 30) -> ProbeFacts:
    """Probe a local file; StitchError if it is not audio/video media."""
    target = str(path.resolve())
    cmd = ["ffprobe", "-v", "error", "-protocol_whitelist", "file"]
    cmd += ["-of", "json", "-show_format", "-show_streams", target]
    done = _run(cmd, timeout=timeout, subject=path.name)
    if done.returncode != 0:
        raise _failure(f"{path.name} is not a media file", cmd, done.stderr.replace(f"{target}: ", ""))
    info = json.loads(done.stdout)
    fmt = info.get("format", {})
    video = _first_stream(info, "video")
    audio = _first_stream(info, "audio")
    if video is None and audio is None:
        raise StitchError(f"{path.name} has no audio or video stream", cmd=cmd)
    duration = _seconds(fmt.get("duration"))
    if duration is None:
        raise StitchError(f"{path.name} has no known duration", cmd=cmd)
    return ProbeFacts(
        format_name=fmt.get("format_name", ""),
        duration=duration,
        start_time=_seconds(fmt.get("start_time")) or 0.0,
        video=_video_facts(video) if video else None,
        audio=_audio_facts(audio) if audio else None,
    )


def output_extension(inputs: list[StitchInput]) -> str:
    return "mp4" if any(item.probe.video for item in inputs) else "m4a"


def stitch(inputs: list[StitchInput], output: Path, *, timeout: float = 3600) -> StitchResult:
    """Join inputs in order with the concat demuxer in stream copy.

    A single input goes the same way (a remux), so every output is uniform.
    """
    if not inputs:
        raise StitchError("nothing to stitch")
    layout = _layout(inputs[0].probe)
    for item in inputs[1:]:
        if _layout(item.probe) != layout:
            raise StitchError(
                f"{item.label} ({_layout(item.probe)}) does not match {inputs[0].label} ({layout});"
                " stream copy needs identical streams"
            )

    listing = output.with_name(f"{output.name}.concat")
    listing.write_text("".join(_entry(item) for item in inputs), encoding="utf-8")
    source_url = str(listing.resolve())
    source = ffmpeg.input(source_url, f="concat", safe=0, protocol_whitelist="file")
    # Only audio and video: a data or subtitle stream would make the mp4 muxer fail.
    options = {"movflags": "+faststart"} if output.suffix.lower() in _MOV_OUTPUTS else {}
    cmd: list[str] = (
        ffmpeg.output(source["v?"], source["a?"], str(output.resolve()), c="copy", **options)
        .global_args("-nostdin", "-hide_banner", "-loglevel", "error")
        .overwrite_output()
        .compile()
    )
    try:
        done = _run(cmd, timeout=timeout, subject=f"{len(inputs)} fragments")
        # A fragment that cannot be read ends the input early, logged as "<list>: <error>", yet
        # ffmpeg exits 0. (-xerror would catch it but also aborts on the DTS fix-up at AAC joins.)
        read_error = any(line.startswith(f"{source_url}: ") for line in done.stderr.splitlines())
        if done.returncode != 0 or read_error:
            raise _failure(f"ffmpeg could not join {len(inputs)} fragments", cmd, done.stderr)
    except StitchError:
        output.unlink(missing_ok=True)  # a partial file must never look like an archive
        raise
    finally:
        listing.unlink(missing_ok=True)

    facts = probe(output)
    lost = [kind for kind in ("video", "audio") if getattr(inputs[0].probe, kind) and not getattr(facts, kind)]
    if lost:
        raise StitchError(f"the output has no {' or '.join(lost)} although the fragments do", cmd=cmd)
    joins, offset = [], 0.0
    for item in inputs:
        joins.append(Join(item.label, offset, item.probe.duration, "copy"))
        offset += item.probe.duration
    return StitchResult(output, facts.duration, "copy", joins, facts, cmd)


def verify(result: StitchResult, expected_duration: float, *, tolerance: float = 0.5, ratio: float = 0.001) -> None:
    """StitchError unless the output lasts as long as the fragments it joined."""
    allowed = tolerance + ratio * expected_duration
    off = abs(result.duration - expected_duration)
    if off > allowed:
        raise StitchError(
            f"output duration {result.duration:.1f} s differs from the fragments' {expected_duration:.1f} s"
            f" by {off:.1f} s (at most {allowed:.1f} s allowed)"
        )


def _entry(item: StitchInput) -> str:
    # One directive per line; inside '...' only ' is special, written as '\''.
    path = str(item.path.resolve())
    if "\n" in path or "\r" in path:
        raise StitchError(f"{item.label}: a path with a line break cannot go into a concat list")
    # Offsets come from the probe, not the demuxer's own guess (for FLV, ~80 ms short a join).
    return "file '{}'\nduration {:.6f}\n".format(path.replace("'", "'\\''"), item.probe.duration)


def _layout(facts: ProbeFacts) -> str:
    """The streams as text, in index order: what stream copy needs to match."""
    streams = []
    if video := facts.video:
        streams.append((video.get("index", 0), f"video {video['codec']} {video['width']}x{video['height']}"))
    if audio := facts.audio:
        text = f"audio {audio['codec']} {audio['sample_rate']} Hz {audio['channels']} ch"
        streams.append((audio.get("index", 1), text))
    return ", ".join(text for _, text in sorted(streams))


def _video_facts(stream: dict[str, Any]) -> dict[str, Any]:
    return {
        "index": stream["index"],  # the concat demuxer maps streams by index
        "codec": stream.get("codec_name"),
        "profile": stream.get("profile"),
        "width": stream.get("width"),
        "height": stream.get("height"),
        "pix_fmt": stream.get("pix_fmt"),
        "fps": _rate(stream.get("avg_frame_rate")) or _rate(stream.get("r_frame_rate")),
        "time_base": stream.get("time_base"),
        "start": _seconds(stream.get("start_time")),
        "duration": _seconds(stream.get("duration")),
    }


def _audio_facts(stream: dict[str, Any]) -> dict[str, Any]:
    return {
        "index": stream["index"],
        "codec": stream.get("codec_name"),
        "profile": stream.get("profile"),
        "sample_rate": int(stream.get("sample_rate", 0)),
        "channels": stream.get("channels"),
        "channel_layout": stream.get("channel_layout"),
        "start": _seconds(stream.get("start_time")),
        "duration": _seconds(stream.get("duration")),
    }


def _first_stream(info: dict[str, Any], kind: str) -> dict[str, Any] | None:
    # Cover art shows up as a video stream; it is not video.
    return next(
        (
            stream
            for stream in info.get("streams", [])
            if stream.get("codec_type") == kind and not stream.get("disposition", {}).get("attached_pic")
        ),
        None,
    )


def _seconds(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None  # ffprobe leaves out what it does not know, or says "N/A"


def _rate(value: str | None) -> float | None:
    try:
        rate = Fraction(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return None  # "0/0" when unknown
    return float(rate) or None


def _run(cmd: list[str], *, timeout: float, subject: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        raise StitchError(
            f"{cmd[0]} timed out after {timeout:g} s on {subject}", cmd=cmd, stderr=stderr[-_STDERR_TAIL:]
        ) from None
    except OSError as exc:
        raise StitchError(f"cannot run {cmd[0]}: {exc}", cmd=cmd) from None


def _failure(reason: str, cmd: list[str], stderr: str) -> StitchError:
    """A StitchError whose reason ends with ffmpeg's last distinct messages."""
    lines = [_CONTEXT.sub("", line).strip() for line in stderr.splitlines()]
    last = list(dict.fromkeys(line for line in lines if line))[-2:]
    return StitchError(f"{reason}: {'; '.join(last) or 'no error output'}", cmd=cmd, stderr=stderr[-_STDERR_TAIL:])
