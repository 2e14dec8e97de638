"""ffprobe facts about one file, and packet scans."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from recorder.errors import StitchError
from recorder.stitch._ffmpeg import Deadline, failure, input_args, rate, run, seconds

_JUMP = 10.0  # a step forward longer than this, or any step back, is a timestamp reset (as ffmpeg's CLI)
_PACKET_FIELDS = "stream_index,pts_time,dts_time,duration_time,pos"
# Decoding is only there to surface errors: frame threads use every core, and the deblocking
# filter (pixels only, no syntax to parse) is skipped: ~35 % less time per verification.
_DECODE = ["-threads", "0", "-skip_loop_filter", "all", "-count_frames"]
_SIDE_BY_SIDE = 256 << 20  # bytes (~13 minutes of 1280x720 at 2.5 Mbit/s): see inspect()


class Windows(NamedTuple):
    """Where a verifying scan looks, as ffprobe -read_intervals: the packets it reads, and the
    stretches it decodes. Two ffprobe runs (see inspect): one run decodes all it reads."""

    read: str
    decode: str


@dataclass(frozen=True)
class ProbeFacts:
    """What ffprobe says about one file; plain data so it can go into a manifest."""

    format_name: str
    duration: float
    start_time: float
    video: dict[str, Any] | None  # codec, profile, width, height, pix_fmt, fps, time_base, start, duration
    audio: dict[str, Any] | None  # codec, profile, sample_rate, channels, channel_layout, time_base, start, duration
    discontinuities: int = 0  # timestamp resets inside the file

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
            discontinuities=int(data.get("discontinuities", 0)),
        )


class Packet(NamedTuple):
    stream: int
    pts: float | None
    dts: float | None
    duration: float
    pos: int


class Scan(NamedTuple):
    """What ffprobe read: stream kinds by index, packets (each once, in read order), its errors."""

    kinds: dict[int, str]
    packets: list[Packet]
    duration: float
    stderr: str


class Inspection(NamedTuple):
    """A verifying scan of ``windows`` made when the file looked like ``stamp``: reusable while it still does."""

    windows: Windows
    stamp: tuple[int, int, int]
    scan: Scan


def _ffprobe(fmt: str | None) -> list[str]:
    """ffprobe, quiet but for errors, reading ``fmt``; its options and the file follow."""
    return ["ffprobe", "-v", "error", *input_args(fmt)]


def stamp(path: Path) -> tuple[int, int, int]:
    """Identity of a file's current contents: inode, size, modification time."""
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def probe(path: Path, *, fmt: str | None = None, timeout: float = 30) -> ProbeFacts:
    """Probe a local file (fmt: "mp4", "flv", "hls", "aac" or "ts"); StitchError if it is not media.

    Outside MP4 the headers do not know how long each stream lasts (ADTS guesses from the
    bitrate, FLV and TS do not say), so those files are also read packet by packet, which
    gives each stream's real start and length and counts timestamp resets.
    """
    return probe_file(path, fmt, Deadline.after(timeout))


def probe_file(path: Path, fmt: str | None, deadline: Deadline) -> ProbeFacts:
    if fmt and fmt != "mp4":  # headers alone cannot know: read the packets in the same ffprobe run
        facts, info, _ = _probe(path, fmt, deadline, packets=True)
        return _packet_timing(facts, _packets(info))
    facts = probe_header(path, fmt, deadline)
    if "mp4" in facts.format_name:
        return facts
    return _packet_timing(facts, scan(path, fmt, deadline).packets)


def probe_header(path: Path, fmt: str | None, deadline: Deadline) -> ProbeFacts:
    return _probe(path, fmt, deadline)[0]


def inspect(path: Path, fmt: str | None, deadline: Deadline, *, windows: Windows) -> tuple[ProbeFacts, Inspection]:
    """probe_header, and a scan of ``windows`` whose stderr has the errors of reading and of decoding.

    The header and the packets come from one ffprobe run (each run costs ~0.1 s to start); the
    decoding runs in a second one, beside it, or after it for a file of ``_SIDE_BY_SIDE`` bytes
    or more: each run holds the file's whole index, and two at once made the worker's peak
    memory on a 2 GB archive (306 MB PSS; 281 MB one after the other), where ~0.1 s is little.
    """
    before = stamp(path)
    _, size, _ = before
    with ThreadPoolExecutor(max_workers=1) as pool:
        beside = pool.submit(_decode, path, fmt, deadline, windows.decode) if size < _SIDE_BY_SIDE else None
        facts, info, stderr = _probe(path, fmt, deadline, packets=True, intervals=windows.read)
        errors = beside.result() if beside else _decode(path, fmt, deadline, windows.decode)
    kinds = {int(s["index"]): s.get("codec_type", "") for s in info.get("streams", [])}
    read = Scan(kinds, _packets(info), facts.duration, stderr + errors)
    return facts, Inspection(windows, before, read)


def _decode(path: Path, fmt: str | None, deadline: Deadline, intervals: str) -> str:
    """Decode ``intervals`` of the file: what the decoders complained about."""
    cmd = [*_ffprobe(fmt), *_DECODE, "-read_intervals", intervals]
    # Counting frames is what makes ffprobe decode them; the count itself is not needed.
    cmd += ["-show_entries", "stream=nb_read_frames", "-of", "csv", str(path.resolve())]
    done = run(cmd, deadline, subject=path.name)
    if done.returncode != 0:
        raise failure(f"{path.name} cannot be decoded", cmd, done.stderr)
    return done.stderr


def _probe(
    path: Path, fmt: str | None, deadline: Deadline, *, packets: bool = False, intervals: str = ""
) -> tuple[ProbeFacts, dict[str, Any], str]:
    """Header facts, ffprobe's JSON (with ``packets``: theirs too) and its stderr."""
    target = str(path.resolve())
    cmd = _ffprobe(fmt)
    if intervals:
        cmd += ["-read_intervals", intervals]
    cmd += ["-of", "json", "-show_format", "-show_streams"]
    if packets:
        cmd += ["-show_entries", f"packet={_PACKET_FIELDS}"]
    done = run([*cmd, target], deadline, subject=path.name)
    if done.returncode != 0:
        raise failure(f"{path.name} is not a media file", cmd, done.stderr.replace(f"{target}: ", ""))
    info = json.loads(done.stdout)
    return _header_facts(info, path.name, cmd), info, done.stderr


def _header_facts(info: dict[str, Any], name: str, cmd: list[str]) -> ProbeFacts:
    fmt_info = info.get("format", {})
    video = _first_stream(info, "video")
    audio = _first_stream(info, "audio")
    if video is None and audio is None:
        raise StitchError(f"{name} has no audio or video stream", cmd=cmd)
    duration = seconds(fmt_info.get("duration"))
    if duration is None:
        raise StitchError(f"{name} has no known duration", cmd=cmd)
    return ProbeFacts(
        format_name=fmt_info.get("format_name", ""),
        duration=duration,
        start_time=seconds(fmt_info.get("start_time")) or 0.0,
        video=_video_facts(video) if video else None,
        audio=_audio_facts(audio) if audio else None,
    )


def scan(path: Path, fmt: str | None, deadline: Deadline, *, intervals: str = "") -> Scan:
    """Read the packets (of ``intervals``, ffprobe's -read_intervals, if given)."""
    cmd = _ffprobe(fmt)
    if intervals:
        cmd += ["-read_intervals", intervals]
    fields = f"format=duration:stream=index,codec_type:packet={_PACKET_FIELDS}"
    cmd += ["-show_entries", fields, "-of", "csv", str(path.resolve())]
    done = run(cmd, deadline, subject=path.name)
    if done.returncode != 0:
        raise failure(f"{path.name} cannot be read", cmd, done.stderr)
    kinds: dict[int, str] = {}
    rows: list[list[str]] = []
    duration = 0.0
    for line in done.stdout.splitlines():
        section, *values = line.split(",")
        if section == "stream" and len(values) >= 2:
            kinds[int(values[0])] = values[1]
        elif section == "format" and values:
            duration = seconds(values[0]) or 0.0
        elif section == "packet" and len(values) >= 5:  # side data, if any, follows
            rows.append(values[:5])
    return Scan(kinds, _unique(rows), duration, done.stderr)


def _packets(info: dict[str, Any]) -> list[Packet]:
    fields = _PACKET_FIELDS.split(",")
    return _unique([[str(p.get(name, "N/A")) for name in fields] for p in info.get("packets", [])])


def _unique(rows: list[list[str]]) -> list[Packet]:
    """Packets from (stream_index, pts_time, dts_time, duration_time, pos) text, each once, in read order."""
    packets: dict[tuple[int, int], Packet] = {}  # a packet read again by an overlapping interval counts once
    for index, pts, dts, length, at in rows:
        pos = int(at) if at.isdigit() else -len(packets) - 1
        packet = Packet(int(index), seconds(pts), seconds(dts), seconds(length) or 0.0, pos)
        packets.setdefault((packet.stream, pos), packet)
    return list(packets.values())


def _packet_timing(facts: ProbeFacts, packets: list[Packet]) -> ProbeFacts:
    """The facts with each stream's start and length read from its packets."""
    streams: dict[str, dict[str, Any] | None] = {"video": facts.video, "audio": facts.audio}
    resets = 0
    for kind, stream in streams.items():
        if stream and (timing := _runs([p for p in packets if p.stream == stream["index"]])):
            start, length, jumps = timing
            streams[kind] = stream | {"start": start, "duration": length}
            resets = max(resets, jumps)
    ends = [s["start"] + s["duration"] for s in streams.values() if s and s["duration"] is not None]
    duration = max(ends) - facts.start_time if ends else facts.duration
    return replace(facts, duration=duration, discontinuities=resets, **streams)


def _runs(packets: list[Packet]) -> tuple[float, float, int] | None:
    """(start, length, resets) of one stream; its length adds up the runs between resets."""
    runs: list[tuple[float, float]] = []  # (first pts, end) of each run
    last = None
    for packet in packets:
        if packet.pts is None:
            continue
        now = packet.pts if packet.dts is None else packet.dts
        end = packet.pts + packet.duration
        if last is None or now < last or now - last > _JUMP:
            runs.append((packet.pts, end))
        else:
            runs[-1] = (min(runs[-1][0], packet.pts), max(runs[-1][1], end))
        last = now
    return (runs[0][0], sum(end - start for start, end in runs), len(runs) - 1) if runs else None


def _video_facts(stream: dict[str, Any]) -> dict[str, Any]:
    return {
        "index": stream["index"],  # the concat demuxer maps streams by index
        "codec": stream.get("codec_name"),
        "profile": stream.get("profile"),
        "width": stream.get("width"),
        "height": stream.get("height"),
        "pix_fmt": stream.get("pix_fmt"),
        "fps": rate(stream.get("avg_frame_rate")) or rate(stream.get("r_frame_rate")),
        "time_base": stream.get("time_base"),
        "start": seconds(stream.get("start_time")),
        "duration": seconds(stream.get("duration")),
    }


def _audio_facts(stream: dict[str, Any]) -> dict[str, Any]:
    return {
        "index": stream["index"],
        "codec": stream.get("codec_name"),
        "profile": stream.get("profile"),
        "sample_rate": int(stream.get("sample_rate", 0)),
        "channels": stream.get("channels"),
        "channel_layout": stream.get("channel_layout"),
        "time_base": stream.get("time_base"),
        "start": seconds(stream.get("start_time")),
        "duration": seconds(stream.get("duration")),
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
