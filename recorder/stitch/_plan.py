"""The pure part: what goes in, what comes out, and which fragment joins how."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from recorder.errors import StitchError
from recorder.stitch._ffmpeg import seconds
from recorder.stitch._probe import Inspection, ProbeFacts, Windows

FORMATS = ("mp4", "flv", "hls", "aac")  # as Tencent records them; hls is a local .m3u8, aac is ADTS
_KEPT = {"mp4": "mp4", "flv": "flv", "hls": "mp4", "aac": "m4a"}  # container="keep"
_SLACK = 0.05  # audio may start or end this far from its video: a frame, plus the AAC encoder's priming
WINDOW = 1.0  # seconds verification checks on each side of a join


@dataclass(frozen=True)
class StitchInput:
    path: Path
    probe: ProbeFacts
    label: str  # fragment name, used in reasons and manifests
    format: str  # one of FORMATS
    trim_start: float = 0.0  # seconds the previous fragment already covers (an overlap)


@dataclass(frozen=True)
class VideoParams:
    codec: str
    profile: str | None
    width: int
    height: int
    pix_fmt: str | None
    fps: float | None

    @property
    def key(self) -> tuple[Any, ...]:
        # Not the frame rate: timestamps carry the timing, so a copy across an fps change plays right.
        return self.codec, self.profile, self.width, self.height, self.pix_fmt


@dataclass(frozen=True)
class AudioParams:
    codec: str
    profile: str | None
    sample_rate: int
    channels: int
    channel_layout: str | None

    @property
    def key(self) -> tuple[Any, ...]:
        return self.codec, self.profile, self.sample_rate, self.channels


@dataclass(frozen=True)
class StitchPlan:
    video: VideoParams | None  # the majority's; None for an audio-only broadcast
    audio: AudioParams | None
    strategies: tuple[str, ...]  # per input: "copy" | "reencode" | "audio-fix"


@dataclass(frozen=True)
class Join:
    label: str
    offset: float  # where this fragment starts in the output, seconds
    duration: float  # seconds of it in the output
    mode: str  # "copy" | "reencode" | "audio-fix"
    # Seconds of overlap with the previous fragment left out at this join: cut from the end of the
    # previous one in a file (a copy can stop at any frame, start only at a keyframe); whole segments
    # of this one in a playlist.
    trimmed: float = 0.0


@dataclass(frozen=True)
class StitchResult:
    path: Path
    duration: float
    mode: str  # "copy" if every join copied, "reencode" if every one re-encoded, else "mixed"
    joins: list[Join]
    probe: ProbeFacts
    command: list[str]  # the final ffmpeg command; empty for a playlist
    extra_files: list[Path] = field(default_factory=list)  # a playlist's segments, stored beside it
    # verify()'s decoding scan, made in the same ffprobe run as ``probe``; verify reads the file
    # again if it changed since, or if the scan does not cover its windows.
    inspection: Inspection | None = field(default=None, repr=False, compare=False)


Params = TypeVar("Params", VideoParams, AudioParams)


def plan(inputs: list[StitchInput], *, reencode_all: bool = False) -> StitchPlan:
    """The majority's parameters and a strategy per input; pure, runs no ffmpeg.

    The majority is the parameter set covering the most seconds; on a tie the earliest
    fragment's set wins (of two equally long fragments, the first). A fragment whose video
    differs is re-encoded ("reencode"); one whose audio differs, or starts or ends more than
    ~a frame away from its video, gets only its audio re-encoded to its video's length
    ("audio-fix"), so that audio never drifts from video across joins.
    """
    if not inputs:
        raise StitchError("nothing to stitch")
    if len(formats := {item.format for item in inputs}) > 1 or not formats <= set(FORMATS):
        raise StitchError(f"cannot stitch {' and '.join(sorted(formats))} fragments: one archive per format")
    for previous, item in zip([None, *inputs[:-1]], inputs, strict=True):
        if item.trim_start < 0 or (previous is None and item.trim_start):
            raise StitchError(f"{item.label}: trim_start {item.trim_start} without a previous fragment to overlap")
        if previous is not None:
            start, end = span(previous.probe)
            if item.trim_start >= end - start:
                raise StitchError(f"{item.label} overlaps all {end - start:.3f} s of {previous.label}: leave it out")
    video = _majority(inputs, _video_params)
    audio = _majority(inputs, _audio_params)
    strategies = []
    for item in inputs:
        if reencode_all or _key(_video_params(item.probe)) != _key(video):
            strategies.append("reencode")
        elif _key(_audio_params(item.probe)) != _key(audio) or (video and audio and _misaligned(item.probe)):
            strategies.append("audio-fix")
        else:
            strategies.append("copy")
    return StitchPlan(video, audio, tuple(strategies))


def output_extension(inputs: list[StitchInput], *, container: str = "auto", hls_playlist: bool = False) -> str:
    """ "auto": mp4 for video, m4a for audio only; "keep": the fragments' own container (HLS: mp4).

    With ``hls_playlist``, HLS fragments make one m3u8 playlist instead.
    """
    if container not in ("auto", "keep"):
        raise ValueError(f"container must be 'auto' or 'keep', not {container!r}")
    if hls_playlist and all(item.format == "hls" for item in inputs):
        return "m3u8"
    if container == "keep":
        return _KEPT[inputs[0].format]
    return "mp4" if plan(inputs).video else "m4a"


def expected_duration(inputs: list[StitchInput]) -> float:
    """What the output should last, from the probes alone: each fragment's video span (its audio
    span if it has no video) minus the overlaps."""
    return sum(end - start - item.trim_start for item in inputs for start, end in [span(item.probe)])


def verification_windows(joins: list[Join], start: float) -> Windows:
    """Where verification looks: the packets of the first seconds and of WINDOW on each side of
    every join; and it decodes WINDOW from the start and from each join.

    Decoding starts at the keyframe at or before each join (a fragment that does not start on
    one is decoded across its join); the frames before a join are their own fragment's, which
    the join does not touch. ``start`` is the output's start time: the windows are in its
    timestamps.
    """
    read = _merged([(0.0, 2 * WINDOW)] + [(j.offset - WINDOW, j.offset + WINDOW) for j in joins[1:]])
    # A join's first frame is at its offset: starting a hair after it keeps the seek from
    # rounding to the keyframe before, which would decode a whole extra GOP.
    decode = _merged([(0.0, WINDOW)] + [(j.offset + 0.001, j.offset + WINDOW) for j in joins[1:]])
    return Windows(_intervals(read, start), _intervals(decode, start))


def _intervals(windows: list[tuple[float, float]], start: float) -> str:
    # The first window reads from the start of the file, where ffprobe skips nothing.
    return ",".join(f"{f'{start + a:.3f}' if a else ''}%{start + b:.3f}" for a, b in windows)


def _merged(windows: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted((max(a, 0.0), b) for a, b in windows):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def span(facts: ProbeFacts, kind: str | None = None) -> tuple[float, float]:
    """(start, end) of a stream in the file's timestamps; by default the video, else the audio."""
    stream = getattr(facts, kind) if kind else facts.video or facts.audio
    start = seconds(stream.get("start"))
    start = facts.start_time if start is None else start
    length = seconds(stream.get("duration"))
    return start, start + (facts.start_time + facts.duration - start if length is None else length)


def _video_params(facts: ProbeFacts) -> VideoParams | None:
    if not (v := facts.video):
        return None
    return VideoParams(v["codec"], v.get("profile"), v["width"], v["height"], v.get("pix_fmt"), v.get("fps"))


def _audio_params(facts: ProbeFacts) -> AudioParams | None:
    if not (a := facts.audio):
        return None
    return AudioParams(a["codec"], a.get("profile"), a["sample_rate"], a["channels"], a.get("channel_layout"))


def _key(params: VideoParams | AudioParams | None) -> tuple[Any, ...] | None:
    return params.key if params else None


def _majority(inputs: list[StitchInput], params_of: Callable[[ProbeFacts], Params | None]) -> Params | None:
    seconds_by_key: dict[tuple[Any, ...] | None, float] = {}
    for item in inputs:
        key = _key(params_of(item.probe))
        seconds_by_key[key] = seconds_by_key.get(key, 0.0) + item.probe.duration
    best = max(seconds_by_key, key=seconds_by_key.__getitem__)  # the first maximum: dicts keep the order
    return next(params for item in inputs if _key(params := params_of(item.probe)) == best)


def _misaligned(facts: ProbeFacts) -> bool:
    (v_start, v_end), (a_start, a_end) = span(facts, "video"), span(facts, "audio")
    return abs(a_start - v_start) > _SLACK or abs(a_end - v_end) > _SLACK
