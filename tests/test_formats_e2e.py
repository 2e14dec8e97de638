"""Every recording format end to end: callbacks to `recorder serve`, stitched by `recorder worker`.

FLV (8 s + 5 s), HLS (8 s + 6 s, playlists of 2 s segments with relative URIs),
AAC (6 s + 6 s) and MP4 whose resolution changes (5 s at 640x360, then 5 s at
320x240): each becomes one archive of the right length that decodes cleanly,
with its joins in the manifest.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import requests

from recorder import stitch
from recorder.demo import media_server, wait_for
from recorder.samples import make_clip
from tests.factories import record_body
from tests.processes import serve_and_work, service_env
from tests.test_e2e import archived

pytestmark = pytest.mark.e2e

START = 1_790_000_000
# format -> the fragments: (file under the media root, seconds, make_clip options)
CASES: dict[str, list[tuple[str, float, dict[str, object]]]] = {
    "flv": [("a.flv", 8, {"fmt": "flv"}), ("b.flv", 5, {"fmt": "flv", "tone": 660})],
    "hls": [("a/index.m3u8", 8, {"fmt": "hls"}), ("b/index.m3u8", 6, {"fmt": "hls", "tone": 660})],
    "aac": [("a.aac", 6, {"fmt": "aac", "video": False}), ("b.aac", 6, {"fmt": "aac", "video": False, "tone": 660})],
    "mp4": [("big.mp4", 5, {"size": "640x360"}), ("small.mp4", 5, {"size": "320x240", "tone": 660})],
}


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("formats")
    for fmt, pieces in CASES.items():
        for name, seconds, options in pieces:
            path = root / fmt / name
            path.parent.mkdir(parents=True, exist_ok=True)
            make_clip(path, seconds, **options)  # type: ignore[arg-type]
    with media_server(root) as url:
        yield url, root


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, redis_url: str, media: tuple[str, Path]) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("formats-service")
    env = service_env(tmp, broker_url=redis_url.rsplit("/", 1)[0] + "/5", media_hosts=urlsplit(media[0]).netloc)
    with serve_and_work(tmp, env) as base:
        yield base


@pytest.mark.parametrize("fmt", list(CASES))
def test_each_format_archives_with_the_right_length_and_clean_joins(
    service: str, media: tuple[str, Path], fmt: str
) -> None:
    url, root = media
    stream_id, begin = f"formats_{fmt}", START
    for n, (name, seconds, _) in enumerate(CASES[fmt]):
        size = None if fmt == "hls" else (root / fmt / name).stat().st_size
        body = record_body(
            stream_id=stream_id, file_id=f"{fmt}-{n}", file_format=fmt.upper(), video_url=f"{url}/{fmt}/{name}",
            start_time=begin, end_time=begin + seconds, duration=seconds, start_time_usec=0, end_time_usec=0,
            callback_ext="{}", **({"file_size": size} if size else {}),
        )  # fmt: skip
        if size is None:
            body.pop("file_size")
        assert requests.post(f"{service}/v1/callbacks/tencent", json=body, timeout=10).status_code == 200
        begin += seconds + 1

    (broadcast,) = wait_for(lambda: archived(service, stream_id), what=f"the {fmt} archive", timeout=180)["items"]
    expected = sum(seconds for _, seconds, _ in CASES[fmt])
    archive = broadcast["archive"]
    path = Path(unquote(urlsplit(archive["url"]).path))
    assert archive["duration"] == pytest.approx(expected, abs=1)
    assert path.suffix == (".m4a" if fmt == "aac" else ".mp4")
    facts = stitch.probe(path)
    assert facts.duration == pytest.approx(expected, abs=1)
    if fmt == "mp4":
        assert (facts.video["width"], facts.video["height"]) == (640, 360)  # type: ignore[index]
    decode = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True, text=True
    )
    assert decode.returncode == 0 and decode.stderr == ""
    manifest = json.loads(path.with_suffix(".json").read_text())
    joins = [f["join"] for f in manifest["fragments"]]
    assert len(joins) == 2 and manifest["verification"] == "verified"
    assert joins[1] == ("reencode" if fmt == "mp4" else "copy")
    assert manifest["fragments"][1]["offset"] == pytest.approx(CASES[fmt][0][1], abs=0.1)
