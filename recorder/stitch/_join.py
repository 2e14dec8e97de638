"""Joining: rewrite what cannot join as it is, then one concat-demuxer stream copy."""

from __future__ import annotations

import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import ffmpeg

from recorder.errors import StitchError
from recorder.stitch._ffmpeg import HLS_EXTENSIONS, Deadline, compiled, failure, input_options, run, whitelist
from recorder.stitch._plan import (
    AudioParams,
    Join,
    StitchInput,
    StitchPlan,
    StitchResult,
    VideoParams,
    output_extension,
    plan,
    span,
    verification_windows,
)
from recorder.stitch._playlist import write_playlist
from recorder.stitch._probe import ProbeFacts, inspect, probe_file, probe_header

# A rewritten fragment: (muxer, format). Same family as the fragments that join as they are,
# so same time bases; an HLS fragment becomes one MPEG-TS file.
_REWRITES = {"mp4": ("mp4", "mp4"), "flv": ("flv", "flv"), "hls": ("mpegts", "ts"), "aac": ("adts", "aac")}
OUTPUTS = {"mp4": "mp4", "m4a": "mp4", "flv": "flv"}  # output extension -> muxer and demuxer
_ENCODERS = {"h264": "libx264", "hevc": "libx265", "aac": "aac"}
_X264_PROFILES = {"Constrained Baseline": "baseline", "Baseline": "baseline", "Main": "main", "High": "high"}


class _Piece(NamedTuple):
    """One file the concat demuxer reads: a fragment as it is, or our rewrite of it."""

    item: StitchInput
    mode: str
    path: Path
    facts: ProbeFacts
    format: str


def stitch(
    inputs: list[StitchInput],
    output: Path,
    *,
    container: str = "auto",
    hls_playlist: bool = False,
    reencode_all: bool = False,
    timeout: float = 3600,
) -> StitchResult:
    """Join inputs in order into ``output``, whose name must end with output_extension(...).

    MP4/M4A outputs get ``+faststart`` and a chapter per fragment. A playlist output lists
    every fragment's segments, linked or copied beside it (``extra_files``), with a
    discontinuity at each join; an overlap there is cut at the nearest segment boundary.
    """
    ext = output_extension(inputs, container=container, hls_playlist=hls_playlist)
    if output.suffix != f".{ext}":
        raise ValueError(f"{output.name}: these fragments make a .{ext} file")
    chosen = plan(inputs, reencode_all=reencode_all)
    deadline = Deadline.after(timeout)
    try:
        if ext == "m3u8":
            return write_playlist(inputs, output, deadline)
        with tempfile.TemporaryDirectory(prefix=f".{output.name}-", dir=output.parent) as work:
            return _concat(_pieces(inputs, chosen, Path(work), deadline), output, Path(work), deadline)
    except StitchError:
        output.unlink(missing_ok=True)  # a partial file must never look like an archive
        raise


def _pieces(inputs: list[StitchInput], chosen: StitchPlan, work: Path, deadline: Deadline) -> list[_Piece]:
    """The files to concatenate: fragments as they are where they can be, rewrites elsewhere."""
    cuts = [nxt.trim_start for nxt in inputs[1:]] + [0.0]

    def as_is(index: int) -> bool:
        # An overlap is cut in a rewrite, never with the concat demuxer's outpoint: that ends a file
        # at the first packet past it in file order, which may be audio stored ahead of the last frames.
        facts = inputs[index].probe
        streams = [s["index"] for s in (facts.video, facts.audio) if s]
        ordered = streams == list(range(len(streams)))  # the demuxer maps streams by index
        return chosen.strategies[index] == "copy" and not cuts[index] and not facts.discontinuities and ordered

    def rewrite(index: int) -> _Piece:
        return _rewrite(inputs[index], chosen.strategies[index], cuts[index], chosen, work, index, timescale, deadline)

    # MP4 rewrites take the video timescale of the first fragment that joins as it is.
    reference = next((inputs[i].probe.video for i in range(len(inputs)) if as_is(i)), inputs[0].probe.video)
    timescale = Fraction(reference["time_base"]).denominator if reference and reference.get("time_base") else None
    pieces = [
        _Piece(item, chosen.strategies[i], item.path, item.probe, item.format) if as_is(i) else rewrite(i)
        for i, item in enumerate(inputs)
    ]
    if len({_time_bases(piece.facts) for piece in pieces}) > 1:  # then rewrite the rest alike
        pieces = [rewrite(i) if piece.path == piece.item.path else piece for i, piece in enumerate(pieces)]
        if len(bases := {_time_bases(piece.facts) for piece in pieces}) > 1:
            raise StitchError(f"the fragments' time bases cannot be made to agree: {sorted(bases)}")
    return pieces


def _rewrite(
    item: StitchInput,
    mode: str,
    cut: float,
    chosen: StitchPlan,
    work: Path,
    index: int,
    timescale: int | None,
    deadline: Deadline,
) -> _Piece:
    """The fragment with the majority's streams, ``cut`` seconds off its end (an overlap)."""
    muxer, fmt = _REWRITES[item.format]
    out = work / f"{index:04d}.{fmt}"
    reading = input_options(item.format)
    if item.format == "flv":
        reading["f"] = "live_flv"  # it smooths over a timestamp reset; flv squashed a reset FLV's 13 s into 8
    source = ffmpeg.input(str(item.path.resolve()), **reading)
    start, end = (t - item.probe.start_time for t in span(item.probe))  # the CLI starts each input at 0
    end -= cut
    streams, options = [], {}
    if chosen.video:
        if mode == "reencode":
            streams.append(_fit_video(source["v:0"], chosen.video))
            options |= _video_encoder(chosen.video)
        else:
            streams.append(source["v:0"])
            options["vcodec"] = "copy"
    if chosen.audio:
        if mode == "copy":
            streams.append(source["a:0"])
            options["acodec"] = "copy"
        else:
            streams.append(_fit_audio(source["a:0"] if item.probe.audio else None, chosen.audio, start, end))
            options["acodec"] = _encoder(chosen.audio.codec)
    if cut:
        options["t"] = end  # every stream stops there on its own
    if muxer == "mp4" and timescale:
        options["video_track_timescale"] = timescale
    cmd = compiled(ffmpeg.output(*streams, str(out), f=muxer, **options))
    done = run(cmd, deadline, subject=item.label)
    if done.returncode != 0:
        verb = "re-encode" if mode == "reencode" else "rewrite"
        raise failure(f"ffmpeg could not {verb} {item.label}", cmd, done.stderr)
    return _Piece(item, mode, out, probe_file(out, fmt, deadline), fmt)


def _fit_video(video: Any, params: VideoParams) -> Any:
    """Scaled into the majority's frame (letterboxed if the shape differs), rate and pixel format."""
    return (
        video.filter("scale", params.width, params.height, force_original_aspect_ratio="decrease")
        .filter("pad", params.width, params.height, "(ow-iw)/2", "(oh-ih)/2")
        .filter("setsar", 1)
        .filter("fps", params.fps or 25)
        .filter("format", params.pix_fmt or "yuv420p")
    )


def _fit_audio(audio: Any, params: AudioParams, start: float, end: float) -> Any:
    """The audio from ``start`` to ``end`` exactly: holes and missing ends filled with silence."""
    layout = params.channel_layout or f"{params.channels}c"
    if audio is None:  # a fragment without audio gets silence, so that every file has the same streams
        audio = ffmpeg.input(f"anullsrc=r={params.sample_rate}:cl={layout}", f="lavfi").audio
    return (
        audio.filter("aformat", sample_rates=params.sample_rate, channel_layouts=layout)
        .filter("aresample", **{"async": 1, "first_pts": 0})
        .filter("apad")
        .filter("atrim", start=start, end=end)
    )


def _video_encoder(params: VideoParams) -> dict[str, Any]:
    options = {"vcodec": _encoder(params.codec), "preset": "veryfast"}
    if params.codec == "h264" and params.profile in _X264_PROFILES:
        options["profile:v"] = _X264_PROFILES[params.profile]
    return options


def _encoder(codec: str) -> str:
    if codec not in _ENCODERS:
        raise StitchError(f"cannot re-encode to {codec}: no encoder for it")
    return _ENCODERS[codec]


def _concat(pieces: list[_Piece], output: Path, work: Path, deadline: Deadline) -> StitchResult:
    listing = ["ffconcat version 1.0"]
    joins = []
    position = span(pieces[0].facts)[0] - pieces[0].facts.start_time  # the first frame's own offset
    for piece, nxt in zip(pieces, [*pieces[1:], None], strict=True):
        start, end = span(piece.facts)
        listing.append(f"file {_quoted(piece)}")
        if piece.format == "hls":  # -allowed_extensions does not reach the files of a concat list
            listing.append(f"option allowed_extensions {HLS_EXTENSIONS}")
        if nxt:
            # The next file's first frame lands right after this file's last one. (Left to its own
            # guess, the demuxer left a 23 ms video gap at each FLV join here.)
            lead = span(nxt.facts)[0] - nxt.facts.start_time
            listing.append(f"duration {end - piece.facts.start_time - lead:.6f}")
        joins.append(Join(piece.item.label, position, end - start, piece.mode, piece.item.trim_start))
        position += end - start
    muxer = OUTPUTS[output.suffix[1:]]
    options: dict[str, Any] = {"c": "copy"}
    if muxer == "mp4":
        # A chapter per fragment, declared in the list itself and titled on the output: a second
        # input (an ffmetadata file) would make ffmpeg pass every packet through input threads,
        # which cost 35 % more time on a 1 GB join (measured: 2.9 s against 2.1 s).
        listing[1:1] = _chapters(joins)
        options |= {f"metadata:c:{index}": f"title={join.label}" for index, join in enumerate(joins)}
        options |= {"map_chapters": 0, "movflags": "+faststart"}
    concat_file = work / "concat.txt"
    concat_file.write_text("\n".join(listing) + "\n", encoding="utf-8")

    source_url = str(concat_file.resolve())
    formats = (piece.format for piece in pieces)  # any of them may be an encrypted playlist read as it is
    source = ffmpeg.input(source_url, f="concat", safe=0, protocol_whitelist=whitelist(*formats))
    streams = [source["v:0?"], source["a:0?"]]  # only audio and video: a data stream would fail the mp4 muxer
    # -copyts: the timeline is the list's own; else an AAC priming packet before 0 shifts it all 23 ms.
    cmd = compiled(ffmpeg.output(*streams, str(output.resolve()), f=muxer, **options).global_args("-copyts"))
    done = run(cmd, deadline, subject=f"{len(pieces)} fragments")
    # A fragment that cannot be read ends the input early, logged as "<list>: <error>", yet
    # ffmpeg exits 0. (-xerror would catch it but also aborts on the DTS fix-up at AAC joins.)
    if done.returncode != 0 or any(line.startswith(f"{source_url}: ") for line in done.stderr.splitlines()):
        culprit = next((p.item.label for p in pieces if not _readable(p, deadline)), None)
        reason = f"ffmpeg could not join {len(pieces)} fragments" + (f": {culprit} cannot be read" if culprit else "")
        raise failure(reason, cmd, done.stderr)

    # The output's facts, and verify()'s scan of it made alongside. The scan's windows assume
    # the output starts at 0, as -copyts makes it; if not, verify() reads again.
    facts, inspection = inspect(output, muxer, deadline, windows=verification_windows(joins, 0.0))
    if lost := [kind for kind in ("video", "audio") if getattr(pieces[0].facts, kind) and not getattr(facts, kind)]:
        raise StitchError(f"the output has no {' or '.join(lost)} although the fragments do", cmd=cmd)
    modes = {join.mode for join in joins}
    mode = "copy" if modes == {"copy"} else "reencode" if modes == {"reencode"} else "mixed"
    return StitchResult(output, facts.duration, mode, joins, facts, cmd, inspection=inspection)


def _quoted(piece: _Piece) -> str:
    # One directive per line; inside '...' only ' is special, written as '\''.
    path = str(piece.path.resolve())
    if "\n" in path or "\r" in path:
        raise StitchError(f"{piece.item.label}: a path with a line break cannot go into a concat list")
    return "'{}'".format(path.replace("'", "'\\''"))


def _chapters(joins: list[Join]) -> list[str]:
    """Concat-list directives: one chapter per fragment, in milliseconds (titles go on the output)."""
    lines = []
    for index, join in enumerate(joins):
        start = 0 if index == 0 else round(join.offset * 1000)
        end = round((join.offset + join.duration) * 1000)
        lines.append(f"chapter {index} {start / 1000:.3f} {end / 1000:.3f}")
    return lines


def _readable(piece: _Piece, deadline: Deadline) -> bool:
    try:
        probe_header(piece.path, piece.format, deadline)
    except StitchError:
        return False
    return True


def _time_bases(facts: ProbeFacts) -> tuple[str | None, ...]:
    return tuple(stream.get("time_base") for stream in (facts.video, facts.audio) if stream)
