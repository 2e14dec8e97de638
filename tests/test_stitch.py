"""The ffmpeg step: plan() on its own, then probe, stitch and verify against real ffmpeg."""

from __future__ import annotations

import json
import random
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from recorder.demo import wait_for
from recorder.errors import StitchError
from recorder.samples import make_clip
from recorder.stitch import (
    Join,
    ProbeFacts,
    StitchInput,
    StitchResult,
    VerificationError,
    expected_duration,
    output_extension,
    plan,
    probe,
    stitch,
    verify,
)
from recorder.stitch._ffmpeg import Deadline
from recorder.stitch._plan import verification_windows
from recorder.stitch._probe import scan

FORMAT_OF = {".mp4": "mp4", ".flv": "flv", ".m3u8": "hls", ".aac": "aac"}


# --- plan(), without ffmpeg -----------------------------------------------------------------


def facts(
    seconds: float = 6.0,
    *,
    size: tuple[int, int] = (320, 240),
    video: bool = True,
    audio: bool = True,
    audio_seconds: float | None = None,
    audio_start: float = 0.0,
    sample_rate: int = 44100,
) -> ProbeFacts:
    v = {"index": 0, "codec": "h264", "profile": "High", "width": size[0], "height": size[1], "pix_fmt": "yuv420p"}
    v |= {"fps": 25.0, "time_base": "1/12800", "start": 0.0, "duration": seconds}
    a = {"index": int(video), "codec": "aac", "profile": "LC", "sample_rate": sample_rate, "channels": 2}
    a |= {"channel_layout": "stereo", "time_base": f"1/{sample_rate}", "start": audio_start}
    a["duration"] = seconds if audio_seconds is None else audio_seconds
    return ProbeFacts("mov,mp4,m4a,3gp,3g2,mj2", seconds, 0.0, v if video else None, a if audio else None)


def item(label: str, probe_facts: ProbeFacts, fmt: str = "mp4", trim: float = 0.0) -> StitchInput:
    return StitchInput(Path(f"/nowhere/{label}"), probe_facts, label, fmt, trim)


def test_plan_copies_fragments_that_match() -> None:
    chosen = plan([item("a", facts()), item("b", facts(4)), item("c", facts(audio_seconds=6.04))])

    assert chosen.strategies == ("copy", "copy", "copy")
    assert chosen.video is not None and (chosen.video.width, chosen.video.height, chosen.video.fps) == (320, 240, 25.0)
    assert chosen.audio is not None and (chosen.audio.sample_rate, chosen.audio.channel_layout) == (44100, "stereo")


def test_plan_reencodes_only_the_odd_video() -> None:
    wide = facts(size=(640, 360))
    chosen = plan([item("odd", facts(size=(320, 240))), item("b", wide), item("c", wide)])

    assert chosen.strategies == ("reencode", "copy", "copy")
    assert chosen.video is not None and (chosen.video.width, chosen.video.height) == (640, 360)


def test_majority_is_by_seconds_and_a_tie_goes_to_the_first() -> None:
    tie = plan([item("first", facts(5, size=(640, 360))), item("second", facts(5, size=(320, 240)))])
    longer = plan([item("short", facts(2, size=(640, 360))), item("long", facts(5, size=(320, 240)))])

    assert tie.strategies == ("copy", "reencode")
    assert longer.strategies == ("reencode", "copy")


@pytest.mark.parametrize(
    "odd",
    [
        facts(audio_seconds=5.0),  # audio a second short
        facts(audio_seconds=6.2),  # or long
        facts(audio_start=0.3),  # starts late
        facts(sample_rate=48000),  # other parameters
        facts(audio=False),  # no audio at all: gets silence
    ],
)
def test_plan_fixes_audio_that_would_drift(odd: ProbeFacts) -> None:
    assert plan([item("a", facts()), item("odd", odd), item("c", facts())]).strategies == ("copy", "audio-fix", "copy")


def test_plan_reencodes_everything_only_when_asked() -> None:
    parts = [item("a", facts()), item("b", facts(size=(640, 360)))]

    assert plan(parts, reencode_all=True).strategies == ("reencode", "reencode")


def test_plan_for_audio_only() -> None:
    chosen = plan([item("a", facts(video=False), "aac"), item("b", facts(video=False), "aac")])

    assert chosen.video is None and chosen.strategies == ("copy", "copy")


@pytest.mark.parametrize(
    ("parts", "reason"),
    [
        ([], "nothing to stitch"),
        ([item("a", facts()), item("b", facts(), "flv")], "cannot stitch flv and mp4 fragments"),
        ([item("a", facts(), trim=1.0)], "a: trim_start 1.0 without a previous fragment"),
        ([item("a", facts()), item("b", facts(), trim=-1)], "b: trim_start -1 without"),
        ([item("a", facts(4)), item("b", facts(), trim=4)], r"b overlaps all 4\.000 s of a: leave it out"),
        ([item("a", facts(), "wav")], "cannot stitch wav fragments"),
    ],
)
def test_plan_refuses_what_cannot_be_stitched(parts: list[StitchInput], reason: str) -> None:
    with pytest.raises(StitchError, match=reason):
        plan(parts)


def test_verification_reads_around_each_join_and_decodes_from_it() -> None:
    joins = [Join("a", 0.023, 60.0, "copy"), Join("b", 60.023, 60.0, "copy"), Join("c", 120.023, 0.5, "copy")]

    windows = verification_windows(joins, 0.0)

    assert windows.read == "%2.000,59.023%61.023,119.023%121.023"
    # From each join's first frame on, not the frames before it, which the join does not touch.
    assert windows.decode == "%1.000,60.024%61.023,120.024%121.023"
    assert verification_windows(joins[:1], 10.0).decode == "%11.000"


def test_output_extension() -> None:
    video, audio = [item("a", facts(), "flv")], [item("a", facts(video=False), "aac")]
    hls = [item("a", facts(), "hls")]

    assert [output_extension(video), output_extension(video, container="keep")] == ["mp4", "flv"]
    assert [output_extension(audio), output_extension(audio, container="keep")] == ["m4a", "m4a"]
    assert [output_extension(hls, container="keep"), output_extension(hls, hls_playlist=True)] == ["mp4", "m3u8"]
    assert output_extension(video, hls_playlist=True) == "mp4"
    with pytest.raises(ValueError, match="container must be"):
        output_extension(video, container="mkv")


def test_expected_duration_is_the_video_spans_minus_overlaps() -> None:
    parts = [item("a", facts(8, audio_seconds=8.03)), item("b", facts(5), trim=1.5), item("c", facts(video=False))]

    assert expected_duration(parts) == pytest.approx(8 + 5 - 1.5 + 6)


# --- against real ffmpeg --------------------------------------------------------------------


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Made once: every fragment the tests below join."""
    root = tmp_path_factory.mktemp("media")

    def hls(name: str, seconds: float, **options: object) -> Path:
        (root / name).mkdir()
        return make_clip(root / name / "index.m3u8", seconds, fmt="hls", hls_time=2, **options)  # type: ignore[arg-type]

    made = {f"f{i}.mp4": make_clip(root / f"f{i}.mp4", 6, tone=440 + 110 * i) for i in range(3)}
    made |= {"a.flv": make_clip(root / "a.flv", 8, fmt="flv"), "b.flv": make_clip(root / "b.flv", 5, fmt="flv")}
    made |= {"h8": hls("h8", 8), "h6": hls("h6", 6, tone=660)}
    made |= {f"a{i}.aac": make_clip(root / f"a{i}.aac", 6, fmt="aac", video=False) for i in range(2)}
    made["big.mp4"] = make_clip(root / "big.mp4", 5, size="640x360")
    made["small.mp4"] = make_clip(root / "small.mp4", 5, tone=660)
    made["late.mp4"] = make_clip(root / "late.mp4", 5, ts_offset=1000, tone=660)  # timestamps from 1000 s
    made["short-audio.mp4"] = make_clip(root / "short-audio.mp4", 5, audio_seconds=4, tone=660)
    made["mute.mp4"] = make_clip(root / "mute.mp4", 3, audio=False)
    return made


def inputs(*paths: Path, trims: tuple[float, ...] = ()) -> list[StitchInput]:
    fmts = [FORMAT_OF[path.suffix] for path in paths]
    labels = [path.parent.name if path.suffix == ".m3u8" else path.name for path in paths]
    return [
        StitchInput(path, probe(path, fmt=fmt), label, fmt, trim)
        for path, fmt, label, trim in zip(paths, fmts, labels, trims or (0.0,) * len(paths), strict=True)
    ]


def ffprobe(path: Path, *args: str) -> str:
    cmd = ["ffprobe", "-v", "error", "-protocol_whitelist", "file,crypto", *args, str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def frame_times(path: Path, stream: str = "v") -> list[float]:
    out = ffprobe(path, "-select_streams", stream, "-show_entries", "packet=pts_time", "-of", "csv=p=0")
    return sorted(float(line.split(",")[0]) for line in out.split())


def join_gaps(path: Path, result: StitchResult) -> list[float]:
    """Per join, the longest pause between video frames around it beyond one frame, seconds."""
    times = frame_times(path)
    steps = list(zip(times, times[1:], strict=False))
    frame = statistics.median(b - a for a, b in steps)
    return [max(b - a for a, b in steps if abs(a - join.offset) < 0.5) - frame for join in result.joins[1:]]


def decode_errors(path: Path) -> str:
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", str(path), "-f", "null", "-"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return done.stderr if done.returncode else done.stderr.strip()


def frame_md5(path: Path, at: float) -> str:
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-ss", str(at), "-i", str(path), "-map", "0:v:0", "-frames:v", "1"]
    cmd += ["-f", "md5", "-"]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def test_probe_reports_video_and_audio(clips: dict[str, Path]) -> None:
    facts = probe(clips["f0.mp4"], fmt="mp4")

    assert "mp4" in facts.format_name
    assert facts.duration == pytest.approx(6, abs=0.05)
    assert facts.start_time == 0
    assert facts.video is not None
    assert facts.video["codec"] == "h264"
    assert (facts.video["width"], facts.video["height"]) == (320, 240)
    assert (facts.video["pix_fmt"], facts.video["fps"], facts.video["time_base"]) == ("yuv420p", 25.0, "1/12800")
    assert facts.audio is not None
    assert (facts.audio["codec"], facts.audio["sample_rate"], facts.audio["channels"]) == ("aac", 44100, 1)
    assert facts.discontinuities == 0
    assert ProbeFacts.from_dict(json.loads(json.dumps(facts.to_dict()))) == facts


@pytest.mark.parametrize(
    ("name", "video", "audio"), [("a.flv", 8.0, 8.034), ("h8", 8.0, 8.034), ("a0.aac", None, 6.037)]
)
def test_probe_times_streams_from_their_packets(
    clips: dict[str, Path], name: str, video: float | None, audio: float
) -> None:
    # ADTS headers guess 5.97 s from the bitrate; FLV and TS do not say at all.
    facts = inputs(clips[name])[0].probe

    assert facts.video is None if video is None else facts.video["duration"] == pytest.approx(video, abs=0.002)
    assert facts.audio is not None and facts.audio["duration"] == pytest.approx(audio, abs=0.002)


@pytest.mark.parametrize(
    ("name", "content", "detail"),
    [
        ("empty.mp4", b"", "Invalid data"),
        ("truncated.mp4", None, "moov atom not found"),
        ("page.mp4", b"<html><body>404 Not Found</body></html>", "Invalid data"),
        ("notes.txt", b"just some text\n", "Invalid data"),
    ],
)
def test_probe_rejects_what_is_not_media(
    clips: dict[str, Path], tmp_path: Path, name: str, content: bytes | None, detail: str
) -> None:
    path = tmp_path / name
    if content is None:  # the first half of an MP4 whose moov is at the end
        data = clips["f0.mp4"].read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)

    with pytest.raises(StitchError) as caught:
        probe(path)

    assert caught.value.reason.startswith(f"{name} is not a media file: ")
    assert detail in caught.value.reason
    assert caught.value.cmd[0] == "ffprobe"


def test_mp4_fragments_join_in_stream_copy_with_chapters(clips: dict[str, Path], tmp_path: Path) -> None:
    parts = inputs(clips["f0.mp4"], clips["f1.mp4"], clips["f2.mp4"])

    result = stitch(parts, tmp_path / "out.mp4")

    assert result.path == tmp_path / "out.mp4"
    assert result.duration == pytest.approx(18, abs=0.05)
    assert result.mode == "copy" and result.extra_files == []
    assert [(j.label, j.mode, j.trimmed) for j in result.joins] == [(p.label, "copy", 0.0) for p in parts]
    assert [j.offset for j in result.joins] == pytest.approx([0, 6, 12], abs=0.001)
    assert result.command[:2] == ["ffmpeg", "-f"] and "-protocol_whitelist" in result.command
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # the work files are gone
    chapters = json.loads(ffprobe(result.path, "-show_chapters", "-of", "json"))["chapters"]
    assert [(c["tags"]["title"], round(float(c["start_time"]), 2)) for c in chapters] == [
        ("f0.mp4", 0),
        ("f1.mp4", 6),
        ("f2.mp4", 12),
    ]
    assert max(join_gaps(result.path, result)) <= 0.001
    verify(result, expected_duration(parts))


def test_single_input_is_remuxed(clips: dict[str, Path], tmp_path: Path) -> None:
    result = stitch(inputs(clips["f0.mp4"]), tmp_path / "out.mp4")

    assert result.duration == pytest.approx(6, abs=0.05)
    assert [j.offset for j in result.joins] == [0]


@pytest.mark.parametrize("container", ["auto", "keep"])
def test_flv_fragments_join_without_gaps(clips: dict[str, Path], tmp_path: Path, container: str) -> None:
    # Without a duration line per file the concat demuxer leaves a gap at every FLV join.
    parts = inputs(clips["a.flv"], clips["b.flv"])
    ext = output_extension(parts, container=container)

    result = stitch(parts, tmp_path / f"out.{ext}", container=container)

    assert (ext, result.mode) == ({"auto": "mp4", "keep": "flv"}[container], "copy")
    assert result.duration == pytest.approx(13, abs=0.05)
    assert join_gaps(result.path, result) == [pytest.approx(0, abs=0.001)]
    verify(result, expected_duration(parts))


def test_hls_playlists_join_without_gaps(clips: dict[str, Path], tmp_path: Path) -> None:
    # Fed as whole playlists: .ts segments one by one through the concat demuxer add a gap each.
    parts = inputs(clips["h8"], clips["h6"])
    assert len(list(clips["h8"].parent.glob("*.ts"))) == 4

    result = stitch(parts, tmp_path / "out.mp4")

    assert result.duration == pytest.approx(14, abs=0.05)
    assert [j.offset for j in result.joins] == pytest.approx([0.023, 8.023], abs=0.001)
    assert join_gaps(result.path, result) == [pytest.approx(0, abs=0.001)]
    verify(result, expected_duration(parts))


def test_aac_fragments_give_m4a(clips: dict[str, Path], tmp_path: Path) -> None:
    parts = inputs(clips["a0.aac"], clips["a1.aac"])

    result = stitch(parts, tmp_path / f"out.{output_extension(parts)}")

    assert result.path.suffix == ".m4a" and result.probe.video is None
    assert result.probe.audio is not None and result.probe.audio["codec"] == "aac"
    assert result.duration == pytest.approx(12, abs=0.1)
    assert result.duration == pytest.approx(expected_duration(parts), abs=0.05)
    verify(result, expected_duration(parts))


def test_a_resolution_change_reencodes_only_the_odd_fragment(clips: dict[str, Path], tmp_path: Path) -> None:
    # A stream copy across it exits 0 and decodes, but its header lies about the frame size.
    parts = inputs(clips["big.mp4"], clips["small.mp4"])

    result = stitch(parts, tmp_path / "out.mp4")

    assert [j.mode for j in result.joins] == ["copy", "reencode"] and result.mode == "mixed"
    assert result.probe.video is not None
    assert (result.probe.video["width"], result.probe.video["height"]) == (640, 360)
    assert result.duration == pytest.approx(10, abs=0.05)
    assert decode_errors(result.path) == ""
    verify(result, expected_duration(parts))


def test_a_timestamp_reset_between_fragments(clips: dict[str, Path], tmp_path: Path) -> None:
    parts = inputs(clips["f0.mp4"], clips["late.mp4"])
    assert parts[1].probe.start_time == pytest.approx(1000, abs=0.1)

    result = stitch(parts, tmp_path / "out.mp4")

    assert result.duration == pytest.approx(11, abs=0.05)
    times = frame_times(result.path)
    assert times == sorted(set(times)) and times[-1] < 11
    verify(result, expected_duration(parts))


def _flv_with_reset(first: Path, second: Path, target: Path) -> Path:
    """One FLV whose timestamps start again at 0 halfway, as after a reconnect within a file."""

    def tags(data: bytes) -> list[bytes]:
        found, pos = [], 13  # header and the first PreviousTagSize
        while pos + 11 <= len(data):
            size = int.from_bytes(data[pos + 1 : pos + 4], "big")
            found.append(data[pos : pos + 15 + size])
            pos += 15 + size
        return found

    a, b = first.read_bytes(), second.read_bytes()
    target.write_bytes(a[:13] + b"".join(tags(a)) + b"".join(t for t in tags(b) if t[0] != 18))  # 18: metadata
    return target


def _hls_with_reset(first: Path, second: Path, target: Path) -> Path:
    """One playlist over two clips' segments, with a discontinuity between them."""
    head = first.read_text().replace("#EXT-X-ENDLIST\n", "#EXT-X-DISCONTINUITY\n")
    tail = [line for line in second.read_text().splitlines() if line.startswith("#EXTINF") or not line.startswith("#")]
    target.write_text(head + "\n".join(tail) + "\n#EXT-X-ENDLIST\n")
    return target


@pytest.mark.parametrize(("fmt", "ext", "join"), [("flv", "flv", _flv_with_reset), ("hls", "m3u8", _hls_with_reset)])
def test_a_timestamp_reset_inside_a_fragment(tmp_path: Path, fmt: str, ext: str, join: Any) -> None:
    halves = [make_clip(tmp_path / f"{name}.{ext}", 2, fmt=fmt) for name in ("p", "q")]
    parts = inputs(join(*halves, tmp_path / f"pq.{ext}"), make_clip(tmp_path / f"r.{ext}", 2, fmt=fmt))
    assert parts[0].probe.discontinuities == 1

    result = stitch(parts, tmp_path / "out.mp4")

    assert result.duration == pytest.approx(6, abs=0.1)  # rewritten with -f flv (not live_flv), it was 4 s
    verify(result, expected_duration(parts))


def test_an_overlap_plays_once(clips: dict[str, Path], tmp_path: Path) -> None:
    parts = inputs(clips["f0.mp4"], clips["f1.mp4"], trims=(0.0, 2.0))

    result = stitch(parts, tmp_path / "out.mp4")

    assert result.duration == pytest.approx(10, abs=0.05)
    assert [(j.offset, j.duration, j.trimmed) for j in result.joins] == [(0.0, 4.0, 0.0), (4.0, 6.0, 2.0)]
    # Cut from the end of the earlier fragment: a copy can stop at any frame, start only at a keyframe.
    assert frame_md5(result.path, 3.96) == frame_md5(clips["f0.mp4"], 3.96)
    assert frame_md5(result.path, 4.0) == frame_md5(clips["f1.mp4"], 0.0)
    assert join_gaps(result.path, result) == [pytest.approx(0, abs=0.001)]
    verify(result, expected_duration(parts))


def test_audio_shorter_than_its_video_is_padded(clips: dict[str, Path], tmp_path: Path) -> None:
    paths = (clips["f0.mp4"], clips["short-audio.mp4"], clips["f1.mp4"])
    parts = inputs(*paths)

    result = stitch(parts, tmp_path / "out.mp4")

    assert [j.mode for j in result.joins] == ["copy", "audio-fix", "copy"]
    assert result.duration == pytest.approx(17, abs=0.05)
    verify(result, expected_duration(parts), max_drift=0.05)

    # The same fragments concatenated naively: audio runs a second ahead after the short one.
    naive = tmp_path / "naive.mp4"
    (tmp_path / "list.txt").write_text("".join(f"file '{path}'\n" for path in paths))
    concat = ["ffmpeg", "-v", "error", "-f", "concat", "-safe", "0", "-i", str(tmp_path / "list.txt"), "-c", "copy"]
    subprocess.run([*concat, str(naive)], check=True)
    naive_result = StitchResult(naive, 17.0, "copy", result.joins, probe(naive), [])
    with pytest.raises(VerificationError, match=r"audio drifts \+\d+ ms from the video at the join to f1\.mp4"):
        verify(naive_result, 17.0)


def test_a_fragment_without_audio_gets_silence(clips: dict[str, Path], tmp_path: Path) -> None:
    parts = inputs(clips["f0.mp4"], clips["mute.mp4"])

    result = stitch(parts, tmp_path / "out.mp4")

    assert [j.mode for j in result.joins] == ["copy", "audio-fix"]
    assert frame_times(result.path, "a")[-1] == pytest.approx(9, abs=0.05)
    verify(result, expected_duration(parts))


def test_fragments_with_other_time_bases_are_made_to_agree(clips: dict[str, Path], tmp_path: Path) -> None:
    # The concat demuxer never rescales: fed as they are, these two come out 70 s long.
    other = tmp_path / "other.mp4"
    cmd = ["ffmpeg", "-v", "error", "-i", str(clips["f1.mp4"]), "-c", "copy", "-video_track_timescale", "90000"]
    subprocess.run([*cmd, str(other)], check=True)
    parts = inputs(clips["f0.mp4"], other)

    result = stitch(parts, tmp_path / "out.mp4")

    assert result.duration == pytest.approx(12, abs=0.05) and result.mode == "copy"
    verify(result, expected_duration(parts))


@pytest.mark.parametrize(("broken", "detail"), [("missing", "Impossible to open"), ("corrupt", "moov atom not found")])
def test_an_unreadable_fragment_fails_the_join_by_name(
    clips: dict[str, Path], tmp_path: Path, broken: str, detail: str
) -> None:
    # ffmpeg ends its input early at such a fragment, yet exits 0.
    late = Path(shutil.copy(clips["f0.mp4"], tmp_path / "late.mp4"))
    parts = inputs(clips["f1.mp4"], late, clips["f2.mp4"])
    if broken == "missing":
        late.unlink()
    else:
        late.write_bytes(late.read_bytes()[:20000])  # truncated: the moov at the end is gone

    with pytest.raises(StitchError) as caught:
        stitch(parts, tmp_path / "out.mp4")

    assert caught.value.reason.startswith("ffmpeg could not join 3 fragments: late.mp4 cannot be read: ")
    assert detail in caught.value.stderr
    assert caught.value.cmd[0] == "ffmpeg"
    assert not (tmp_path / "out.mp4").exists()


def test_hls_fragments_as_one_playlist(clips: dict[str, Path], tmp_path: Path) -> None:
    parts = inputs(clips["h8"], clips["h6"])
    assert output_extension(parts, hls_playlist=True) == "m3u8"

    result = stitch(parts, tmp_path / "archive.m3u8", hls_playlist=True)

    text = result.path.read_text()
    names = [f"archive-{n:05d}.ts" for n in range(7)]
    assert [line for line in text.splitlines() if not line.startswith("#")] == names
    assert text.count("#EXT-X-DISCONTINUITY") == 1
    assert text.index("#EXT-X-DISCONTINUITY") < text.index(names[4]) and text.index(names[3]) < text.index(
        "#EXT-X-DISCONTINUITY"
    )
    assert result.extra_files == [tmp_path / name for name in names] and all(p.is_file() for p in result.extra_files)
    assert (result.duration, result.mode, result.command) == (14.0, "copy", [])
    assert [j.offset for j in result.joins] == [0.0, 8.0]
    assert result.probe.duration == pytest.approx(14, abs=0.05)
    verify(result, expected_duration(parts))


def test_a_playlist_cuts_an_overlap_at_a_segment_boundary(clips: dict[str, Path], tmp_path: Path) -> None:
    parts = inputs(clips["h8"], clips["h6"], trims=(0.0, 2.2))

    result = stitch(parts, tmp_path / "archive.m3u8", hls_playlist=True)

    assert [(j.duration, j.trimmed) for j in result.joins] == [(8.0, 0.0), (4.0, 2.0)]
    assert len(result.extra_files) == 6


def encrypted_hls(clip: Path, folder: Path) -> Path:
    """``clip`` as an HLS playlist in ``folder`` whose segments are AES-128 encrypted, key00000.key."""
    folder.mkdir()
    (key := folder / "key00000.key").write_bytes(bytes(range(16)))
    (folder / "info").write_text(f"{key.name}\n{key}\n")
    cmd = ["ffmpeg", "-v", "error", "-i", str(clip), "-c", "copy", "-f", "hls", "-hls_time", "2"]
    subprocess.run([*cmd, "-hls_key_info_file", str(folder / "info"), str(folder / "index.m3u8")], check=True)
    return folder / "index.m3u8"


def test_encrypted_hls_joins_and_publishes_its_key(clips: dict[str, Path], tmp_path: Path) -> None:
    parts = inputs(*(encrypted_hls(clips[name], tmp_path / name.removesuffix(".mp4")) for name in ("f0.mp4", "f1.mp4")))

    joined = stitch(parts, tmp_path / "out.mp4")
    listed = stitch(parts, tmp_path / "archive.m3u8", hls_playlist=True)

    assert joined.duration == pytest.approx(12, abs=0.05)
    verify(joined, expected_duration(parts))
    assert [p.name for p in listed.extra_files][:2] == ["archive-00000.key", "archive-00001.ts"]
    assert '#EXT-X-KEY:METHOD=AES-128,URI="archive-00000.key",IV=0x' in listed.path.read_text()
    assert probe(listed.path, fmt="hls").duration == pytest.approx(12, abs=0.1)  # it decrypts


def test_a_rewritten_fragment_before_an_encrypted_playlist(clips: dict[str, Path], tmp_path: Path) -> None:
    # The odd first fragment becomes a plain MPEG-TS file; the encrypted playlist is joined as it is.
    (tmp_path / "odd").mkdir()
    odd = make_clip(tmp_path / "odd" / "index.m3u8", 4, size="640x360", fmt="hls")
    parts = inputs(odd, encrypted_hls(clips["f0.mp4"], tmp_path / "encrypted"))

    result = stitch(parts, tmp_path / "out.mp4")

    assert [j.mode for j in result.joins] == ["reencode", "copy"]
    assert result.duration == pytest.approx(10, abs=0.1)
    verify(result, expected_duration(parts))


def test_everything_is_reencoded_only_when_asked(clips: dict[str, Path], tmp_path: Path) -> None:
    parts = inputs(clips["f0.mp4"], clips["big.mp4"])

    result = stitch(parts, tmp_path / "out.mp4", reencode_all=True)

    assert result.mode == "reencode"
    assert result.probe.video is not None and result.probe.video["width"] == 320  # 6 s beat 5 s
    assert result.duration == pytest.approx(11, abs=0.05)
    verify(result, expected_duration(parts))


def test_verify_rejects_a_wrong_duration(clips: dict[str, Path], tmp_path: Path) -> None:
    result = stitch(inputs(clips["f0.mp4"], clips["f1.mp4"]), tmp_path / "out.mp4")

    verify(result, 12.4)
    with pytest.raises(VerificationError, match=r"output duration 12\.0 s differs from the fragments' 18\.0 s by 6\.0"):
        verify(result, 18.0)


@pytest.mark.parametrize("seconds", [0.2, 6.0, 6.2], ids=["near the start", "the join's keyframe", "after the join"])
def test_verify_rejects_an_undecodable_join(clips: dict[str, Path], tmp_path: Path, seconds: float) -> None:
    result = stitch(inputs(clips["f0.mp4"], clips["f1.mp4"]), tmp_path / "out.mp4")
    positions = ffprobe(result.path, "-select_streams", "v", "-show_entries", "packet=pts_time,pos", "-of", "csv=p=0")
    at = next(int(pos) for pts, pos in (line.split(",") for line in positions.split()) if float(pts) >= seconds)
    with result.path.open("r+b") as f:  # scribble over frames that verification decodes
        f.seek(at)
        f.write(bytes(range(256)) * 40)

    with pytest.raises(VerificationError, match="the output does not decode cleanly near its joins"):
        verify(result, 12.0)


@pytest.mark.parametrize("side_by_side", [True, False], ids=["decoding beside the read", "after it (big files)"])
def test_verify_decodes_frames_whose_packets_read_cleanly(
    clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, side_by_side: bool
) -> None:
    """Damage inside the join's keyframe, its framing intact: only decoding can find it."""
    if not side_by_side:
        monkeypatch.setattr("recorder.stitch._probe._SIDE_BY_SIDE", 0)
    result = stitch(inputs(clips["f0.mp4"], clips["f1.mp4"]), tmp_path / "out.mp4")
    fields = ["-select_streams", "v", "-show_entries", "packet=pts_time,size,pos", "-of", "csv=p=0"]  # its order
    rows = (line.split(",") for line in ffprobe(result.path, *fields).split())
    at, size = next((int(pos), int(size)) for pts, size, pos in rows if float(pts) >= 6)
    with result.path.open("r+b") as f:  # its second half: slice data (an SEI and NAL sizes come first)
        f.seek(at + size // 2)
        f.write(random.Random(1).randbytes(size // 2 - 64))
    read = verification_windows(result.joins, 0.0).read

    assert scan(result.path, "mp4", Deadline.after(30), intervals=read).stderr == ""
    with pytest.raises(VerificationError, match="the output does not decode cleanly near its joins: .*decoding MB"):
        verify(result, 12.0)


def test_verify_rejects_timestamps_that_go_back(clips: dict[str, Path], tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.ts", 1, fmt="ts")
    twice = tmp_path / "twice.ts"
    twice.write_bytes(clip.read_bytes() * 2)  # the second copy starts again at the same timestamps
    facts = probe(twice)
    result = StitchResult(twice, 2.0, "copy", [Join("a", 0, 1, "copy"), Join("b", 1, 1, "copy")], facts, [])

    with pytest.raises(VerificationError, match=r"video timestamps go back to 0\.0\d\d s after 0\.9\d\d s"):
        verify(result, 1.0)


def test_paths_with_quotes_work(clips: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / 'it\'s "quoted" \\ here'
    folder.mkdir()
    paths = [shutil.copy(clips[name], folder / f"o'clock {name}") for name in ("f0.mp4", "f1.mp4")]

    result = stitch(inputs(*map(Path, paths)), folder / "a'b.mp4")

    assert result.duration == pytest.approx(12, abs=0.05)


def test_the_output_name_must_fit_the_fragments(clips: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"out\.mp4: these fragments make a \.m4a file"):
        stitch(inputs(clips["a0.aac"]), tmp_path / "out.mp4")


def test_timeout_kills_ffmpeg(clips: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(StitchError, match="ffmpeg timed out after 0.001 s"):
        stitch(inputs(clips["f0.mp4"]), tmp_path / "out.mp4", timeout=0.001)

    assert sorted(tmp_path.iterdir()) == []


def test_ffmpeg_dies_with_a_worker_killed_outright() -> None:
    """kill -9 (the OOM killer, Celery's hard time limit) runs no cleanup: the kernel must end ffmpeg."""
    script = (
        "from recorder.stitch._ffmpeg import Deadline, run\n"
        "run(['ffmpeg', '-nostdin', '-loglevel', 'error', '-re', '-f', 'lavfi', '-i', 'testsrc', '-f', 'null', '-'],"
        " Deadline.after(600), subject='test')\n"
    )
    worker = subprocess.Popen([sys.executable, "-c", script])
    ffmpeg = wait_for(lambda: psutil.Process(worker.pid).children()[0], what="ffmpeg")
    try:
        worker.kill()
        worker.wait()
        wait_for(lambda: psutil.wait_procs([ffmpeg], timeout=0.1)[0][0], what="ffmpeg to end", timeout=5)
    finally:
        if ffmpeg.is_running():  # an orphan: the test failed
            ffmpeg.kill()
