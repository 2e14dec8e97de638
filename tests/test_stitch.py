"""The ffmpeg step against real ffmpeg: probe, stitch, verify."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from recorder.errors import StitchError
from recorder.samples import make_clip
from recorder.stitch import (
    ProbeFacts,
    StitchInput,
    output_extension,
    probe,
    stitch,
    verify,
)


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Made once: three 6 s MP4s, two 2 s FLVs, two 2 s ADTS AAC files, two 2 s HLS, a larger MP4."""
    root = tmp_path_factory.mktemp("media")
    made = {f"f{i}.mp4": make_clip(root / f"f{i}.mp4", 6) for i in range(3)}
    made |= {f"f{i}.flv": make_clip(root / f"f{i}.flv", 2, fmt="flv") for i in range(2)}
    made |= {f"a{i}.aac": make_clip(root / f"a{i}.aac", 2, fmt="aac", video=False) for i in range(2)}
    made |= {f"h{i}.m3u8": make_clip(root / f"h{i}.m3u8", 2, fmt="hls") for i in range(2)}
    made["big.mp4"] = make_clip(root / "big.mp4", 2, size="640x360")
    return made


def inputs(*paths: Path) -> list[StitchInput]:
    return [StitchInput(path, probe(path), path.name) for path in paths]


def test_probe_reports_video_and_audio(clips: dict[str, Path]) -> None:
    facts = probe(clips["f0.mp4"])

    assert "mp4" in facts.format_name
    assert facts.duration == pytest.approx(6, abs=0.05)
    assert facts.start_time == 0
    assert facts.video is not None
    assert facts.video["codec"] == "h264"
    assert (facts.video["width"], facts.video["height"]) == (320, 240)
    assert facts.video["pix_fmt"] == "yuv420p"
    assert facts.video["fps"] == 25.0
    assert facts.audio is not None
    assert facts.audio["codec"] == "aac"
    assert facts.audio["sample_rate"] == 44100
    assert facts.audio["channels"] == 1
    assert ProbeFacts.from_dict(json.loads(json.dumps(facts.to_dict()))) == facts


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


def test_stitch_joins_in_order_with_stream_copy(clips: dict[str, Path], tmp_path: Path) -> None:
    parts = inputs(clips["f0.mp4"], clips["f1.mp4"], clips["f2.mp4"])
    assert output_extension(parts) == "mp4"

    result = stitch(parts, tmp_path / "out.mp4")

    assert result.path == tmp_path / "out.mp4"
    assert result.duration == pytest.approx(18, abs=0.1)
    assert result.mode == "copy"
    assert result.probe.video is not None and result.probe.audio is not None
    assert [(j.label, j.mode) for j in result.joins] == [("f0.mp4", "copy"), ("f1.mp4", "copy"), ("f2.mp4", "copy")]
    assert [j.offset for j in result.joins] == pytest.approx([0, 6, 12], abs=0.05)
    assert result.command[:2] == ["ffmpeg", "-f"] and "-protocol_whitelist" in result.command
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # the list file is gone
    verify(result, 18.0)


def test_single_input_is_remuxed(clips: dict[str, Path], tmp_path: Path) -> None:
    result = stitch(inputs(clips["f0.mp4"]), tmp_path / "out.mp4")

    assert result.duration == pytest.approx(6, abs=0.1)
    assert [j.offset for j in result.joins] == [0]


def test_flv_fragments_join_without_gaps(clips: dict[str, Path], tmp_path: Path) -> None:
    parts = inputs(clips["f0.flv"], clips["f1.flv"])

    result = stitch(parts, tmp_path / f"out.{output_extension(parts)}")

    assert result.path.suffix == ".mp4"
    assert result.duration == pytest.approx(sum(p.probe.duration for p in parts), abs=0.1)
    verify(result, 4.0)


def test_local_hls_playlists_join(clips: dict[str, Path], tmp_path: Path) -> None:
    parts = inputs(clips["h0.m3u8"], clips["h1.m3u8"])

    result = stitch(parts, tmp_path / "out.mp4")

    assert parts[0].probe.format_name == "hls"
    assert result.duration == pytest.approx(4, abs=0.1)
    verify(result, sum(p.probe.duration for p in parts))


def test_audio_only_gives_m4a(clips: dict[str, Path], tmp_path: Path) -> None:
    parts = inputs(clips["a0.aac"], clips["a1.aac"])
    assert output_extension(parts) == "m4a"

    result = stitch(parts, tmp_path / "out.m4a")

    assert result.probe.video is None
    assert result.probe.audio is not None and result.probe.audio["codec"] == "aac"
    assert result.duration == pytest.approx(4, abs=0.1)
    verify(result, 4.0)


def test_verify_rejects_a_wrong_duration(clips: dict[str, Path], tmp_path: Path) -> None:
    result = stitch(inputs(clips["f0.mp4"], clips["f1.mp4"]), tmp_path / "out.mp4")

    verify(result, 12.4)
    with pytest.raises(StitchError, match=r"output duration 12\.0 s differs from the fragments' 18\.0 s by 6\.0 s"):
        verify(result, 18.0)


def test_paths_with_quotes_work(clips: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / 'it\'s "quoted" \\ here'
    folder.mkdir()
    paths = [shutil.copy(clips[name], folder / f"o'clock {name}") for name in ("f0.mp4", "f1.mp4")]

    result = stitch(inputs(*map(Path, paths)), folder / "a'b.mp4")

    assert result.duration == pytest.approx(12, abs=0.1)


def test_mismatched_streams_are_refused(clips: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(StitchError, match=r"big\.mp4 \(video h264 640x360.*does not match f0\.mp4"):
        stitch(inputs(clips["f0.mp4"], clips["big.mp4"]), tmp_path / "out.mp4")


@pytest.mark.parametrize(("broken", "detail"), [("missing", "Impossible to open"), ("corrupt", "moov atom not found")])
def test_unreadable_fragment_fails_the_join(clips: dict[str, Path], tmp_path: Path, broken: str, detail: str) -> None:
    # ffmpeg ends its input early at such a fragment, yet exits 0.
    late = Path(shutil.copy(clips["f0.mp4"], tmp_path / "late.mp4"))
    parts = inputs(clips["f1.mp4"], late, clips["f2.mp4"])
    if broken == "missing":
        late.unlink()
    else:
        late.write_text("not media")

    with pytest.raises(StitchError) as caught:
        stitch(parts, tmp_path / "out.mp4")

    assert caught.value.reason.startswith("ffmpeg could not join 3 fragments: ")
    assert detail in caught.value.stderr
    assert caught.value.cmd[0] == "ffmpeg"
    assert not (tmp_path / "out.mp4").exists()


def test_timeout_kills_ffmpeg(clips: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(StitchError, match="ffmpeg timed out after 0.001 s"):
        stitch(inputs(clips["f0.mp4"]), tmp_path / "out.mp4", timeout=0.001)

    assert sorted(tmp_path.iterdir()) == []
