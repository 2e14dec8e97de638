"""Hostile URLs, servers, playlists and files through the whole pipeline (callback → stored →
settled → fetched → probed → stitched), on SQLite and PostgreSQL, against a real HTTP server
and real ffmpeg. Only DNS answers are faked, where a name must resolve to a private address.

Each one is answered 200 (a vendor's change must not drop a recording) and ends as a failed
broadcast whose reason names the problem, or, when the fault passes, as the archive; and no
byte of the real /etc/passwd is ever found in the work dir or the archive.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from werkzeug import Response

from recorder import fetch, pipeline, stitch
from recorder.config import Settings
from recorder.errors import StitchError
from recorder.samples import make_clip
from tests.factories import fragment_body
from tests.reliability.ledger import Counts, Ledger
from tests.test_fetch import PASSWD, FakeDNS, chunked, endless, playlist, redirect
from tests.test_lifecycle import make_ctx
from tests.test_pipeline import run_until_quiet

START = 1_790_000_000


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "BACKOFF", 0.05)


@pytest.fixture
def ctx(settings: Settings, client: FlaskClient, server: HTTPServer) -> pipeline.Context:
    """The pipeline in-process with a fake clock; the hostile server is an allowlisted host:port."""
    hosts = (*settings.media_hosts, f"127.0.0.1:{server.port}")
    return make_ctx(settings, media_hosts=hosts, download_timeout=0.3)


@pytest.fixture
def ledger(ctx: pipeline.Context, client: FlaskClient, count: Counts) -> Ledger:
    def send(path: str, raw: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        answer = client.post(path, data=raw, headers=headers)
        return answer.status_code, answer.get_json()

    return Ledger(count, ctx.sessions, ctx.store, send)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A good clip, and files that are not what they claim to be."""
    root = tmp_path_factory.mktemp("hostile")
    make_clip(root / "good.mp4", 4, faststart=True)
    make_clip(root / "moov_at_end.mp4", 4)
    make_clip(root / "really.flv", 4, fmt="flv")
    whole = (root / "moov_at_end.mp4").read_bytes()
    return {
        "good": (root / "good.mp4").read_bytes(),
        "truncated": whole[: len(whole) * 2 // 3],  # no moov: it is written last
        "flv": (root / "really.flv").read_bytes(),
        "playlist": playlist("#EXTINF:4.0,", "file:///etc/passwd").encode(),
        "passwd-like": b"root:x:0:0:not the real one:/root:/bin/sh\n",
        "empty": b"",
    }


def url(server: HTTPServer, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


def body(video_url: str, *, size: int | None = None, fmt: str = "mp4", stream_id: str = "hostile") -> dict[str, Any]:
    extra: dict[str, Any] = {"file_size": size} if size is not None else {}
    return fragment_body(stream_id, f"{stream_id}-0", START, video_url=video_url, file_format=fmt, **extra)


def fails(ctx: pipeline.Context, ledger: Ledger, callback: dict[str, Any], reason: str) -> None:
    """Answered 200, then the broadcast fails at once with ``reason``; nothing of /etc/passwd anywhere."""
    ledger.post(callback, bad=True)
    assert run_until_quiet(ctx, ctx.clock) == ["failed"]  # type: ignore[arg-type]
    ledger.audit(outcome="failed", reason=reason)
    assert_no_passwd(ctx)


def assert_no_passwd(ctx: pipeline.Context) -> None:
    root = ctx.settings.work_dir.parent
    assert not [p for p in root.rglob("*") if p.is_file() and PASSWD[:64] in p.read_bytes()]


def retried_then_archived(
    ctx: pipeline.Context, ledger: Ledger, server: HTTPServer, path: str, good: bytes, reason: str
) -> None:
    """The fault is transient: the broadcast keeps its place and retries; once the server behaves, it is archived."""
    assert run_until_quiet(ctx, ctx.clock) == ["stitching"]  # type: ignore[arg-type]
    (broadcast,) = ledger.broadcasts()
    assert broadcast.error and broadcast.error.startswith("retrying: ") and reason in broadcast.error
    server.clear()
    server.expect_request(path).respond_with_data(good)
    ctx.clock.now = broadcast.next_attempt_at + 1  # type: ignore[attr-defined,operator]
    assert [pipeline.stitch_broadcast(ctx, b) for b in pipeline.sweep(ctx).stitches] == ["archived"]
    ledger.audit()
    assert_no_passwd(ctx)


# --- hosts and addresses --------------------------------------------------------------------


@pytest.mark.parametrize("video_url", ["file:///etc/passwd", "gopher://x.myqcloud.com:70/_GET%20/"])
def test_non_http_video_urls_are_refused_at_intake(ledger: Ledger, video_url: str) -> None:
    ledger.post(body(video_url), expect=400, reason="video_url")


@pytest.mark.parametrize(
    ("video_url", "reason"),
    [
        ("http://evil.example/a.mp4", "video_url host evil.example is not in RECORDER_MEDIA_HOSTS"),
        ("http://x.myqcloud.com.evil.example/a.mp4", "host x.myqcloud.com.evil.example is not in"),
        ("http://x.myqcloud.com@evil.example/a.mp4", "must not carry user info"),
        ("https://169.254.169.254/latest/meta-data/", "host 169.254.169.254 is not in"),
    ],
)
def test_hosts_outside_the_allowlist_fail_with_a_reason(
    ctx: pipeline.Context, ledger: Ledger, video_url: str, reason: str
) -> None:
    fails(ctx, ledger, body(video_url), reason)


@pytest.mark.parametrize("address", ["127.0.0.1", "169.254.169.254", "10.0.0.7", "::ffff:127.0.0.1"])
def test_an_allowlisted_name_resolving_to_a_private_address_is_never_fetched(
    ctx: pipeline.Context, ledger: Ledger, server: HTTPServer, dns: FakeDNS, address: str
) -> None:
    dns.set("media.myqcloud.com", [address])
    server.expect_request("/a.mp4").respond_with_data(b"never")
    fails(ctx, ledger, body(f"http://media.myqcloud.com:{server.port}/a.mp4"), f"resolves to {address}, which is not")
    assert not server.log


# --- redirects ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "redirect target host 169.254.169.254 is not in"),
        ("file:///etc/passwd", "redirect target scheme 'file' is not allowed"),
        ("/r2", "more than 3 redirects"),  # r1 → r2 → r3 → r4 → r5
    ],
)
def test_redirects_to_forbidden_places_or_too_many(
    ctx: pipeline.Context, ledger: Ledger, server: HTTPServer, location: str, reason: str
) -> None:
    redirect(server, "/r1", location)
    for n in range(2, 5):
        redirect(server, f"/r{n}", f"/r{n + 1}")
    server.expect_request("/r5").respond_with_data(b"never")
    fails(ctx, ledger, body(url(server, "/r1")), reason)
    assert "/r5" not in [r.path for r, _ in server.log]


# --- sizes and speed ------------------------------------------------------------------------


def test_a_content_length_other_than_the_declared_size(
    ctx: pipeline.Context, ledger: Ledger, server: HTTPServer, files: dict[str, bytes]
) -> None:
    server.expect_request("/a.mp4").respond_with_data(files["good"])
    size = len(files["good"]) + 1000
    fails(ctx, ledger, body(url(server, "/a.mp4"), size=size), f"but expected {size} bytes")


def test_an_endless_body_is_cut_at_the_declared_size(ctx: pipeline.Context, ledger: Ledger, server: HTTPServer) -> None:
    server.expect_request("/a.mp4").respond_with_response(endless())
    fails(ctx, ledger, body(url(server, "/a.mp4"), size=100_000), "body exceeds 100000 bytes")


def test_a_body_shorter_than_its_content_length_is_retried(
    ctx: pipeline.Context, ledger: Ledger, server: HTTPServer, files: dict[str, bytes]
) -> None:
    good = files["good"]

    def lying(request: Any) -> Response:
        response = chunked(good[:1000])
        response.headers["Content-Length"] = str(len(good))
        return response

    server.expect_request("/a.mp4").respond_with_handler(lying)
    ledger.post(body(url(server, "/a.mp4"), size=len(good)), bad=True)
    retried_then_archived(ctx, ledger, server, "/a.mp4", good, "gave up after 3 attempts")


def test_a_one_byte_a_second_trickle_is_cut_off_and_retried(
    ctx: pipeline.Context, ledger: Ledger, server: HTTPServer, files: dict[str, bytes]
) -> None:
    def trickle() -> Iterator[bytes]:
        while True:
            yield b"x"
            time.sleep(1)

    server.expect_request("/a.mp4").respond_with_handler(lambda _: Response(trickle(), direct_passthrough=True))
    ledger.post(body(url(server, "/a.mp4"), size=len(files["good"])), bad=True)
    retried_then_archived(ctx, ledger, server, "/a.mp4", files["good"], "timed out")


# --- playlists ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        (["#EXTINF:4.0,", "file:///etc/passwd"], "playlist entry scheme 'file' is not allowed"),
        (["#EXTINF:4.0,", "concat:a.ts|b.ts"], "playlist entry scheme 'concat' is not allowed"),
        (["#EXTINF:4.0,", "data:video/mp2t;base64,R0lG"], "playlist entry scheme 'data' is not allowed"),
        (['#EXT-X-KEY:METHOD=AES-128,URI="file:///etc/passwd"', "#EXTINF:4.0,", "a.ts"], "scheme 'file'"),
        (["#EXTINF:4.0,", "../x.ts"], "/x.ts: HTTP 404"),  # a URL on the media host, never a local path
        (["#EXTINF:4.0,", "/etc/passwd"], "is not a media file"),  # fetched from the host: not media
    ],
)
def test_hostile_playlist_entries(
    ctx: pipeline.Context, ledger: Ledger, server: HTTPServer, files: dict[str, bytes], entries: list[str], reason: str
) -> None:
    server.expect_request("/live/index.m3u8").respond_with_data(playlist(*entries))
    server.expect_request("/x.ts").respond_with_data(b"", status=404)
    server.expect_request("/etc/passwd").respond_with_data(files["passwd-like"])
    fails(ctx, ledger, body(url(server, "/live/index.m3u8"), fmt="hls"), reason)
    assert not [r.path for r, _ in server.log if r.path.startswith("/live/") and r.path != "/live/index.m3u8"]


def test_a_self_referencing_playlist(ctx: pipeline.Context, ledger: Ledger, server: HTTPServer) -> None:
    server.expect_request("/m.m3u8").respond_with_data("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nm.m3u8\n")
    fails(ctx, ledger, body(url(server, "/m.m3u8"), fmt="hls"), "nests master playlists deeper than 2 levels")


def test_deeply_nested_playlists(ctx: pipeline.Context, ledger: Ledger, server: HTTPServer) -> None:
    for n in range(1, 10):
        server.expect_request(f"/m{n}.m3u8").respond_with_data(
            f"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nm{n + 1}.m3u8\n"
        )
    fails(ctx, ledger, body(url(server, "/m1.m3u8"), fmt="hls"), "nests master playlists deeper than 2 levels")


def test_a_playlist_of_100k_segments(ctx: pipeline.Context, ledger: Ledger, server: HTTPServer) -> None:
    server.expect_request("/big.m3u8").respond_with_data(playlist(*["#EXTINF:1.0,\ns.ts"] * 100_000))
    fails(ctx, ledger, body(url(server, "/big.m3u8"), fmt="hls"), "has 100000 entries, more than 20000")
    assert [r.path for r, _ in server.log] == ["/big.m3u8"]


# --- files that are not what they claim -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("flv", "is not a media file"),  # an FLV sent as file_format mp4
        ("playlist", "is not a media file"),  # a playlist naming /etc/passwd, sent as mp4
        ("truncated", "moov atom not found"),
        ("empty", "is not a media file"),
    ],
)
def test_files_that_are_not_what_they_claim(
    ctx: pipeline.Context, ledger: Ledger, server: HTTPServer, files: dict[str, bytes], name: str, reason: str
) -> None:
    server.expect_request("/a.mp4").respond_with_data(files[name])
    fails(ctx, ledger, body(url(server, "/a.mp4"), size=len(files[name])), reason)


# --- a crafted playlist given straight to our ffmpeg invocation -----------------------------


@pytest.fixture(scope="module")
def hls_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hls")
    make_clip(folder / "index.m3u8", 4, fmt="hls")
    return folder


CRAFTED = [
    "/etc/passwd",
    "file:///etc/passwd",
    "concat:/etc/passwd|index0.ts",
    "subfile,,start,0,end,2000,,:/etc/passwd",
    "crypto:/etc/passwd",
    "data:text/plain;base64,cm9vdDp4OjA6MA==",
    "/etc/passwd#.ts",
    "../../../../../../etc/passwd",
    "http://127.0.0.1:9/index0.ts",
]


@pytest.mark.parametrize("entry", CRAFTED)
def test_a_crafted_playlist_fails_in_our_ffmpeg_and_reads_no_local_file(
    hls_clip: Path, tmp_path: Path, entry: str, count: Counts
) -> None:
    count("bad")
    folder = tmp_path / "hls"
    shutil.copytree(hls_clip, folder)
    facts = stitch.probe(folder / "index.m3u8", fmt="hls")  # the real playlist, as the pipeline probed it
    (folder / "index.m3u8").write_text(playlist("#EXTINF:2.0,", entry, "#EXTINF:2.0,", entry))
    with pytest.raises(StitchError) as probed:
        stitch.probe(folder / "index.m3u8", fmt="hls")
    assert "is not a media file" in probed.value.reason
    out = tmp_path / "out.mp4"
    inputs = [stitch.StitchInput(path=folder / "index.m3u8", probe=facts, label="crafted", format="hls")]
    with pytest.raises(StitchError):
        stitch.stitch(inputs, out)
    assert not out.exists() or PASSWD[:64] not in out.read_bytes()
