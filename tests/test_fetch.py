"""Safe fetch against a real HTTP server on 127.0.0.1. Only DNS answers are faked."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from recorder import fetch
from recorder.errors import FetchError
from recorder.fetch import HostAllowlist, check_url, download, download_hls, hls_copy_digest

PASSWD = Path("/etc/passwd").read_bytes()


class FakeDNS:
    """Answers for chosen names; each call takes the next answer, the last one repeats."""

    def __init__(self) -> None:
        self.answers: dict[str, list[list[str]]] = {}
        self.calls: list[str] = []
        self.real = socket.getaddrinfo

    def set(self, name: str, *answers: list[str]) -> None:
        self.answers[name] = list(answers)

    def __call__(self, host: str, port: int, *args: object, **kwargs: object) -> list[tuple]:  # type: ignore[type-arg]
        if host not in self.answers:
            return self.real(host, port, *args, **kwargs)  # type: ignore[arg-type]
        self.calls.append(host)
        queue = self.answers[host]
        addresses = queue.pop(0) if len(queue) > 1 else queue[0]
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port, 0, 0))
            if ":" in a
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    fake = FakeDNS()
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


@pytest.fixture(scope="module")
def _server() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", threaded=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(_server: HTTPServer) -> Iterator[HTTPServer]:
    yield _server
    _server.clear()


Reply = Callable[[socket.socket], None]


@pytest.fixture
def raw_server() -> Iterator[Callable[[Reply], int]]:
    """Starts loopback servers that answer each request by hand, for what werkzeug will not send
    (a malformed Location, headers a byte at a time); returns the port."""
    listeners = []

    def answer(conn: socket.socket, reply: Reply) -> None:
        with conn:
            conn.recv(65536)  # the request
            try:
                reply(conn)
            except OSError:  # the client gave up
                pass

    def accept(listener: socket.socket, reply: Reply) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed: the test is over
                return
            threading.Thread(target=answer, args=(conn, reply), daemon=True).start()

    def start(reply: Reply) -> int:
        listeners.append(listener := socket.create_server(("127.0.0.1", 0)))
        threading.Thread(target=accept, args=(listener, reply), daemon=True).start()
        return int(listener.getsockname()[1])

    yield start
    for listener in listeners:
        listener.close()


def download_raw(port: int, dest: Path, **options: Any) -> fetch.Downloaded:
    """download() of /a.mp4 from a raw_server, the one allowed host."""
    allow = HostAllowlist([f"127.0.0.1:{port}"])
    return download(f"http://127.0.0.1:{port}/a.mp4", dest, allow=allow, expected_size=None, **options)


@pytest.fixture
def allow(server: HTTPServer) -> HostAllowlist:
    return HostAllowlist([f"127.0.0.1:{server.port}", "*.myqcloud.com"])


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "BACKOFF", 0.05)


def url(server: HTTPServer, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


def refused(excinfo: pytest.ExceptionInfo[FetchError], *, permanent: bool = True) -> str:
    assert excinfo.value.permanent is permanent
    return excinfo.value.reason


# --- allowlist and URL checks -------------------------------------------------------------

PATTERNS = ["*.myqcloud.com", "media.example.com", "127.0.0.1:8123", "[::1]:8080", "*.cdn.test:8443"]


@pytest.mark.parametrize(
    ("host", "port", "allowed", "explicit"),
    [
        ("x.myqcloud.com", 443, True, False),
        ("a.b.MYQCLOUD.com", 80, True, False),
        ("x.myqcloud.com.", 80, True, False),
        ("myqcloud.com", 443, False, False),  # *.suffix is subdomains only
        ("x.myqcloud.com.evil.example", 443, False, False),
        ("evilmyqcloud.com", 443, False, False),
        ("media.example.com", 9000, True, False),  # bare host: any port
        ("sub.media.example.com", 443, False, False),
        ("127.0.0.1", 8123, True, True),
        ("127.0.0.1", 8124, False, False),
        ("::1", 8080, True, True),
        ("[0:0::1]", 8080, True, True),
        ("::1", 80, False, False),
        ("a.cdn.test", 8443, True, False),
        ("a.cdn.test", 443, False, False),
    ],
)
def test_allowlist_matching(host: str, port: int, allowed: bool, explicit: bool) -> None:
    allow = HostAllowlist(PATTERNS)
    assert allow.allows(host, port) is allowed
    assert allow.explicitly_allows(host, port) is explicit


@pytest.mark.parametrize(
    "pattern",
    ["*", "*.*.com", "http://x.com", "x.com/path", "a:b:c", "[::1", "[nothost]:80", "x.com:0", "x.com:99999", "x..com"],
)
def test_allowlist_rejects_bad_patterns(pattern: str) -> None:
    with pytest.raises(ValueError, match="RECORDER_MEDIA_HOSTS"):
        HostAllowlist([pattern])


@pytest.mark.parametrize(
    ("video_url", "reason"),
    [
        ("https://x.myqcloud.com/live/a.mp4?txSecret=1", None),
        ("HTTP://X.MYQCLOUD.COM/a.flv", None),
        ("http://127.0.0.1:8123/a.mp4", None),
        ("http://[::1]:8080/a.mp4", None),
        ("http://evil.example/a.mp4", "video_url host evil.example is not in RECORDER_MEDIA_HOSTS"),
        ("http://x.myqcloud.com.evil.example/a.mp4", "host x.myqcloud.com.evil.example is not in"),
        ("http://x.myqcloud.com@evil.example/a.mp4", "must not carry user info"),
        ("http://x.myqcloud.com\\@evil.example/a.mp4", "must not carry user info"),
        ("https://user:pw@x.myqcloud.com/a.mp4", "must not carry user info"),
        ("http://127.0.0.1:8124/a.mp4", "host 127.0.0.1:8124 is not in"),
        ("http://169.254.169.254/latest/meta-data/", "host 169.254.169.254 is not in"),
        ("file:///etc/passwd", "scheme 'file' is not allowed"),
        ("gopher://x.myqcloud.com:70/_GET", "scheme 'gopher' is not allowed"),
        ("x.myqcloud.com/a.mp4", "scheme '(none)' is not allowed"),
        ("http:///a.mp4", "has no valid host"),
        ("http://x.myqcloud.com%00/a.mp4", "has no valid host"),
        ("http://x.myqcloud.com:99999/a.mp4", "invalid port"),
        ("http://[::1/a.mp4", "video_url is not a valid URL: 'http://[::1/a.mp4'"),
    ],
)
def test_check_url(video_url: str, reason: str | None) -> None:
    allow = HostAllowlist(PATTERNS)
    if reason is None:
        check_url(video_url, allow)
        return
    with pytest.raises(FetchError) as excinfo:
        check_url(video_url, allow)
    assert reason in refused(excinfo)


# --- addresses and pinning ----------------------------------------------------------------


@pytest.mark.parametrize(
    "addresses",
    [
        ["127.0.0.1"],
        ["169.254.169.254"],
        ["10.1.2.3"],
        ["::ffff:127.0.0.1"],
        ["64:ff9b::7f00:1"],
        ["2002:7f00:1::"],
        ["8.8.8.8", "127.0.0.1"],
    ],
)
def test_name_resolving_to_non_public_address_is_refused(
    server: HTTPServer, allow: HostAllowlist, dns: FakeDNS, tmp_path: Path, addresses: list[str]
) -> None:
    dns.set("media.myqcloud.com", addresses)
    with pytest.raises(FetchError) as excinfo:
        download(f"http://media.myqcloud.com:{server.port}/a.mp4", tmp_path / "a.mp4", allow=allow, expected_size=None)
    assert "which is not a public address" in refused(excinfo)
    assert not server.log


def test_public_addresses_pass(dns: FakeDNS) -> None:
    allow = HostAllowlist(["*.myqcloud.com"])
    dns.set("media.myqcloud.com", ["8.8.8.8", "2606:4700::1", "::ffff:8.8.4.4"])
    target = fetch._parse("https://media.myqcloud.com/a.mp4", allow, "video_url")
    assert fetch._resolve(target, allow) == "8.8.8.8"  # checked only: nothing connects to it


def test_explicit_host_port_permits_loopback_and_connection_is_pinned(
    server: HTTPServer, dns: FakeDNS, tmp_path: Path
) -> None:
    # Any later lookup answers 127.0.0.2, where nothing listens: a second resolution would fail.
    dns.set("media.myqcloud.com", ["127.0.0.1"], ["127.0.0.2"])
    server.expect_request("/a.mp4").respond_with_data(b"media")
    allow = HostAllowlist([f"media.myqcloud.com:{server.port}"])
    got = download(f"http://media.myqcloud.com:{server.port}/a.mp4", tmp_path / "a.mp4", allow=allow, expected_size=5)
    assert got.path.read_bytes() == b"media"
    assert dns.calls == ["media.myqcloud.com"]
    ((request, _),) = server.log
    assert request.headers["Host"] == f"media.myqcloud.com:{server.port}"
    with pytest.raises(FetchError, match="not a public address"):
        download(
            f"http://media.myqcloud.com:{server.port}/a.mp4",
            tmp_path / "b.mp4",
            allow=HostAllowlist(["media.myqcloud.com"]),  # host without port is not explicit enough
            expected_size=5,
        )


def test_ipv6_literal(tmp_path: Path) -> None:
    server = HTTPServer(host="::1")
    server.start()
    try:
        server.expect_request("/a.mp4").respond_with_data(b"six")
        allow = HostAllowlist([f"[::1]:{server.port}"])
        got = download(f"http://[::1]:{server.port}/a.mp4", tmp_path / "a.mp4", allow=allow, expected_size=3)
        assert got.path.read_bytes() == b"six"
    finally:
        server.stop()


@pytest.fixture
def tls_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HTTPServer]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("media.myqcloud.com").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))  # trust the test CA, verification stays on
    server = HTTPServer(host="127.0.0.1", ssl_context=context)
    server.start()
    yield server
    server.stop()


def test_https_pins_address_but_verifies_the_name(tls_server: HTTPServer, dns: FakeDNS, tmp_path: Path) -> None:
    dns.set("media.myqcloud.com", ["127.0.0.1"])
    dns.set("other.myqcloud.com", ["127.0.0.1"])
    tls_server.expect_request("/a.mp4").respond_with_data(b"secure")
    port = tls_server.port
    allow = HostAllowlist([f"media.myqcloud.com:{port}", f"other.myqcloud.com:{port}"])
    got = download(f"https://media.myqcloud.com:{port}/a.mp4", tmp_path / "a.mp4", allow=allow, expected_size=6)
    assert got.path.read_bytes() == b"secure"
    assert tls_server.log[0][0].headers["Host"] == f"media.myqcloud.com:{port}"
    # The certificate names media.myqcloud.com, so the same server under another name fails.
    with pytest.raises(FetchError) as excinfo:
        download(
            f"https://other.myqcloud.com:{port}/a.mp4", tmp_path / "b.mp4", allow=allow, expected_size=6, attempts=1
        )
    assert "certificate" in refused(excinfo, permanent=False).lower()


# --- redirects ----------------------------------------------------------------------------


def redirect(server: HTTPServer, path: str, location: str) -> None:
    server.expect_request(path).respond_with_data(b"", status=302, headers={"Location": location})


def test_three_redirects_are_followed(server: HTTPServer, allow: HostAllowlist, tmp_path: Path) -> None:
    redirect(server, "/r1", "/r2")
    redirect(server, "/r2", url(server, "/r3"))
    redirect(server, "/r3", "final.mp4")
    server.expect_request("/final.mp4").respond_with_data(b"ok")
    got = download(url(server, "/r1"), tmp_path / "a.mp4", allow=allow, expected_size=2)
    assert got.path.read_bytes() == b"ok"


def test_fourth_redirect_is_refused(server: HTTPServer, allow: HostAllowlist, tmp_path: Path) -> None:
    for n in range(1, 5):
        redirect(server, f"/r{n}", f"/r{n + 1}")
    server.expect_request("/r5").respond_with_data(b"never")
    with pytest.raises(FetchError) as excinfo:
        download(url(server, "/r1"), tmp_path / "a.mp4", allow=allow, expected_size=None)
    assert "more than 3 redirects" in refused(excinfo)
    assert [r.path for r, _ in server.log] == ["/r1", "/r2", "/r3", "/r4"]


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("file:///etc/passwd", "redirect target scheme 'file' is not allowed"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "redirect target host 169.254.169.254 is not in RECORDER_MEDIA_HOSTS",
        ),
        ("http://meta.myqcloud.com/latest/meta-data/", "meta.myqcloud.com resolves to 169.254.169.254"),
        ("http://user@meta.myqcloud.com/", "redirect target must not carry user info"),
    ],
)
def test_redirect_to_forbidden_target_is_refused(
    server: HTTPServer, allow: HostAllowlist, dns: FakeDNS, tmp_path: Path, location: str, reason: str
) -> None:
    dns.set("meta.myqcloud.com", ["169.254.169.254"])
    redirect(server, "/a.mp4", location)
    with pytest.raises(FetchError) as excinfo:
        download(url(server, "/a.mp4"), tmp_path / "a.mp4", allow=allow, expected_size=None)
    assert reason in refused(excinfo)
    assert not (tmp_path / "a.mp4").exists()


def test_malformed_redirect_target_is_refused(raw_server: Callable[[Reply], int], tmp_path: Path) -> None:
    port = raw_server(lambda conn: conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: http://[evil/x\r\n\r\n"))
    with pytest.raises(FetchError) as excinfo:
        download_raw(port, tmp_path / "a.mp4")
    assert refused(excinfo) == "redirect target is not a valid URL: 'http://[evil/x'"
    assert not list(tmp_path.iterdir())


# --- sizes, deadline, retries -------------------------------------------------------------


def test_download_streams_and_hashes(server: HTTPServer, allow: HostAllowlist, tmp_path: Path) -> None:
    body = bytes(range(256)) * 12_000  # 3 MB, several chunks
    server.expect_request("/a.mp4").respond_with_data(body)
    got = download(url(server, "/a.mp4"), tmp_path / "out" / "a.mp4", allow=allow, expected_size=len(body))
    assert got == fetch.Downloaded(tmp_path / "out" / "a.mp4", len(body), hashlib.sha256(body).hexdigest())
    assert got.path.read_bytes() == body
    assert list((tmp_path / "out").iterdir()) == [got.path]  # no .part left behind


def test_content_length_disagreeing_with_expected_size(
    server: HTTPServer, allow: HostAllowlist, tmp_path: Path
) -> None:
    server.expect_request("/a.mp4").respond_with_data(b"x" * 100)
    with pytest.raises(FetchError) as excinfo:
        download(url(server, "/a.mp4"), tmp_path / "a.mp4", allow=allow, expected_size=120)
    assert "Content-Length 100 but expected 120 bytes" in refused(excinfo)
    assert len(server.log) == 1 and not list(tmp_path.iterdir())


def chunked(*parts: bytes, pause: float = 0) -> Response:
    def body() -> Iterator[bytes]:
        for part in parts:
            time.sleep(pause)
            yield part

    return Response(body(), direct_passthrough=True)  # no Content-Length: sent chunked


def test_compressed_body_is_refused(server: HTTPServer, allow: HostAllowlist, tmp_path: Path) -> None:
    server.expect_request("/a.mp4").respond_with_data(gzip.compress(b"media"), headers={"Content-Encoding": "gzip"})
    with pytest.raises(FetchError) as excinfo:
        download(url(server, "/a.mp4"), tmp_path / "a.mp4", allow=allow, expected_size=None)
    assert "server sent Content-Encoding 'gzip' although identity was asked for" in refused(excinfo)
    assert server.log[0][0].headers["Accept-Encoding"] == "identity" and not list(tmp_path.iterdir())


def test_final_size_different_from_expected(server: HTTPServer, allow: HostAllowlist, tmp_path: Path) -> None:
    server.expect_request("/a.mp4").respond_with_response(chunked(b"x" * 50, b"y" * 50))
    with pytest.raises(FetchError) as excinfo:
        download(url(server, "/a.mp4"), tmp_path / "a.mp4", allow=allow, expected_size=120)
    assert "got 100 bytes but expected 120" in refused(excinfo)


def test_lying_content_length_is_a_failed_transfer(server: HTTPServer, allow: HostAllowlist, tmp_path: Path) -> None:
    def short_body(request: Request) -> Response:
        response = chunked(b"x" * 50)
        response.headers["Content-Length"] = "100"
        return response

    server.expect_request("/a.mp4").respond_with_handler(short_body)
    with pytest.raises(FetchError) as excinfo:
        download(url(server, "/a.mp4"), tmp_path / "a.mp4", allow=allow, expected_size=100, timeout=0.5, attempts=1)
    assert "gave up after 1 attempts" in refused(excinfo, permanent=False)
    assert not list(tmp_path.iterdir())


def endless() -> Response:
    return chunked(*[b"z" * 65536] * 2000)


def test_endless_body_is_capped_at_expected_size(server: HTTPServer, allow: HostAllowlist, tmp_path: Path) -> None:
    server.expect_request("/a.mp4").respond_with_response(endless())
    with pytest.raises(FetchError) as excinfo:
        download(url(server, "/a.mp4"), tmp_path / "a.mp4", allow=allow, expected_size=1000)
    assert "body exceeds 1000 bytes" in refused(excinfo)


def test_endless_body_of_unknown_size_hits_the_hard_cap(
    server: HTTPServer, allow: HostAllowlist, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetch, "MAX_BYTES", 300_000)
    server.expect_request("/a.mp4").respond_with_response(endless())
    with pytest.raises(FetchError) as excinfo:
        download(url(server, "/a.mp4"), tmp_path / "a.mp4", allow=allow, expected_size=None)
    assert "body exceeds 300000 bytes" in refused(excinfo)


def test_trickle_hits_the_deadline(server: HTTPServer, allow: HostAllowlist, tmp_path: Path) -> None:
    server.expect_request("/a.mp4").respond_with_response(chunked(*[b"x"] * 200, pause=0.05))
    started = time.monotonic()
    with pytest.raises(FetchError) as excinfo:
        # Each byte comes well within the read timeout; only the overall deadline (4 x 0.25 s) stops it.
        download(url(server, "/a.mp4"), tmp_path / "a.mp4", allow=allow, expected_size=None, timeout=0.25, attempts=1)
    assert "too slow" in refused(excinfo, permanent=False)
    assert time.monotonic() - started < 2.5


def drip(head: bytes, body: bytes = b"") -> Reply:
    """Sends ``head`` at once, then ``body`` a byte at a time, each well within a 0.25 s read timeout."""

    def reply(conn: socket.socket) -> None:
        conn.sendall(head)
        for byte in body:
            conn.sendall(bytes([byte]))
            time.sleep(0.05)

    return reply


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (drip(b"HTTP/1.1 200 OK\r\n", b"X-Pad: " + b"a" * 100 + b"\r\nContent-Length: 1\r\n\r\nx"), "0 bytes in"),
        # Without a length the body ends when the connection does: a socket shut down must not pass for that.
        (drip(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"x" * 100), ""),
    ],
    ids=["headers", "body without length"],
)
def test_dripping_server_hits_the_deadline(
    raw_server: Callable[[Reply], int], tmp_path: Path, reply: Reply, reason: str
) -> None:
    port = raw_server(reply)
    started = time.monotonic()
    with pytest.raises(FetchError) as excinfo:
        # One deadline (4 x 0.25 s) covers the attempt, the status line and headers included.
        download_raw(port, tmp_path / "a.mp4", timeout=0.25, attempts=1)
    assert f"too slow, {reason}" in refused(excinfo, permanent=False)
    assert time.monotonic() - started < 2 and not list(tmp_path.iterdir())


def test_404_is_permanent_and_not_retried(server: HTTPServer, allow: HostAllowlist, tmp_path: Path) -> None:
    server.expect_request("/a.mp4").respond_with_data(b"no", status=404)
    with pytest.raises(FetchError) as excinfo:
        download(url(server, "/a.mp4"), tmp_path / "a.mp4", allow=allow, expected_size=None)
    assert refused(excinfo) == f"GET {url(server, '/a.mp4')}: HTTP 404"
    assert len(server.log) == 1


def test_503_then_200_is_retried(server: HTTPServer, allow: HostAllowlist, tmp_path: Path) -> None:
    server.expect_oneshot_request("/a.mp4").respond_with_data(b"busy", status=503)
    server.expect_request("/a.mp4").respond_with_data(b"fine")
    got = download(url(server, "/a.mp4"), tmp_path / "a.mp4", allow=allow, expected_size=4)
    assert got.path.read_bytes() == b"fine"
    assert [resp.status_code for _, resp in server.log] == [503, 200]


def test_persistent_503_is_transient_after_attempts(server: HTTPServer, allow: HostAllowlist, tmp_path: Path) -> None:
    server.expect_request("/a.mp4").respond_with_data(b"busy", status=503)
    with pytest.raises(FetchError) as excinfo:
        download(url(server, "/a.mp4"), tmp_path / "a.mp4", allow=allow, expected_size=None, attempts=3)
    assert "HTTP 503 (gave up after 3 attempts)" in refused(excinfo, permanent=False)
    assert len(server.log) == 3


def test_connection_refused_is_transient(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    allow = HostAllowlist([f"127.0.0.1:{port}"])
    with pytest.raises(FetchError) as excinfo:
        download(f"http://127.0.0.1:{port}/a.mp4", tmp_path / "a.mp4", allow=allow, expected_size=None, attempts=2)
    assert "Connection refused (gave up after 2 attempts)" in refused(excinfo, permanent=False)


# --- HLS ----------------------------------------------------------------------------------


def playlist(*lines: str) -> str:
    return "\n".join(["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:4", *lines, "#EXT-X-ENDLIST", ""])


def test_hls_relative_segments_are_downloaded_and_rewritten(
    server: HTTPServer, allow: HostAllowlist, tmp_path: Path
) -> None:
    segments = {"/live/a.ts": b"A" * 1000, "/live/sub/b.ts": b"B" * 2000, "/x.ts": b"C" * 10, "/other/d.ts": b"D" * 5}
    for path, body in segments.items():
        server.expect_request(path).respond_with_data(body)
    server.expect_request("/live/k.key").respond_with_data(b"k" * 16)
    server.expect_request("/live/index.m3u8").respond_with_data(
        playlist(
            "#EXT-X-MEDIA-SEQUENCE:7",
            '#EXT-X-KEY:METHOD=AES-128,URI="k.key",IV=0x0000000000000000000000000000000A',
            "#EXTINF:4.0,",
            "a.ts",
            "#EXTINF:3.5,",
            "sub/b.ts?token=1",
            "#EXT-X-KEY:METHOD=NONE",
            "#EXT-X-DISCONTINUITY",
            "#EXTINF:2.0,",
            "../x.ts",  # an HTTP request to the same server: fine
            "#EXTINF:1.0,",
            url(server, "/other/d.ts"),
        )
    )
    redirect(server, "/start.m3u8", "/live/index.m3u8")  # entries resolve against the final URL
    got = download_hls(url(server, "/start.m3u8"), tmp_path / "hls", allow=allow)
    assert got.path == tmp_path / "hls" / "index.m3u8"
    assert got.path.read_text().splitlines() == [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        "#EXT-X-TARGETDURATION:4",
        "#EXT-X-MEDIA-SEQUENCE:7",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        '#EXT-X-KEY:METHOD=AES-128,URI="key00000.key",IV=0x0000000000000000000000000000000A',
        "#EXTINF:4.0,",
        "seg00000.ts",
        "#EXTINF:3.5,",
        "seg00001.ts",
        "#EXT-X-DISCONTINUITY",
        "#EXT-X-KEY:METHOD=NONE",
        "#EXTINF:2.0,",
        "seg00002.ts",
        "#EXTINF:1.0,",
        "seg00003.ts",
        "#EXT-X-ENDLIST",
    ]
    bodies = list(segments.values())
    for n, body in enumerate(bodies):
        assert (tmp_path / "hls" / f"seg{n:05d}.ts").read_bytes() == body
    assert (tmp_path / "hls" / "key00000.key").read_bytes() == b"k" * 16
    files = b"k" * 16 + b"".join(bodies)  # in playlist order, after the playlist itself
    assert (got.size, got.sha256) == (len(files), hashlib.sha256(got.path.read_bytes() + files).hexdigest())
    assert sorted(p.name for p in (tmp_path / "hls").iterdir()) == [
        "index.m3u8",
        "key00000.key",
        "seg00000.ts",
        "seg00001.ts",
        "seg00002.ts",
        "seg00003.ts",
    ]


def test_hls_master_playlist_follows_the_best_variant(server: HTTPServer, allow: HostAllowlist, tmp_path: Path) -> None:
    server.expect_request("/master.m3u8").respond_with_data(
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=200000\nlow/index.m3u8\n"
        "#EXT-X-STREAM-INF:BANDWIDTH=900000,RESOLUTION=1280x720\nhigh/index.m3u8\n"
    )
    server.expect_request("/high/index.m3u8").respond_with_data(playlist("#EXTINF:4.0,", "s.ts"))
    server.expect_request("/high/s.ts").respond_with_data(b"hi")
    got = download_hls(url(server, "/master.m3u8"), tmp_path, allow=allow)
    assert (tmp_path / "seg00000.ts").read_bytes() == b"hi" and got.size == 2
    assert [r.path for r, _ in server.log] == ["/master.m3u8", "/high/index.m3u8", "/high/s.ts"]


def test_hls_fmp4_byte_ranges_share_one_download(server: HTTPServer, allow: HostAllowlist, tmp_path: Path) -> None:
    server.expect_request("/v/init.mp4").respond_with_data(b"I" * 8)
    server.expect_request("/v/all.m4s").respond_with_data(b"S" * 30)
    server.expect_request("/v/index.m3u8").respond_with_data(
        playlist(
            '#EXT-X-MAP:URI="init.mp4"',
            "#EXTINF:2.0,",
            "#EXT-X-BYTERANGE:10@0",
            "all.m4s",
            "#EXTINF:2.0,",
            "#EXT-X-BYTERANGE:20@10",
            "all.m4s",
        )
    )
    got = download_hls(url(server, "/v/index.m3u8"), tmp_path, allow=allow)
    assert got.path.read_text().splitlines()[5:-1] == [
        '#EXT-X-MAP:URI="init00000.mp4"',
        "#EXTINF:2.0,",
        "#EXT-X-BYTERANGE:10@0",
        "seg00000.m4s",
        "#EXTINF:2.0,",
        "#EXT-X-BYTERANGE:20@10",
        "seg00000.m4s",
    ]
    assert (got.size, got.sha256) == (38, hashlib.sha256(got.path.read_bytes() + b"I" * 8 + b"S" * 30).hexdigest())
    assert sorted(r.path for r, _ in server.log) == ["/v/all.m4s", "/v/index.m3u8", "/v/init.mp4"]


def test_hls_copy_stops_at_max_bytes(server: HTTPServer, allow: HostAllowlist, tmp_path: Path) -> None:
    for name in ("a", "b"):
        server.expect_request(f"/cap/{name}.ts").respond_with_data(name.encode() * 1000)
    server.expect_request("/cap/index.m3u8").respond_with_data(playlist("#EXTINF:2.0,", "a.ts", "#EXTINF:2.0,", "b.ts"))
    with pytest.raises(FetchError, match="holds more than 1500 bytes"):
        download_hls(url(server, "/cap/index.m3u8"), tmp_path, allow=allow, max_bytes=1500)
    assert download_hls(url(server, "/cap/index.m3u8"), tmp_path / "whole", allow=allow, max_bytes=2000).size == 2000


def held(folder: Path) -> int:
    """Bytes in the files of ``folder`` now, while downloads write and remove them."""
    total = 0
    for path in folder.iterdir():
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total


def test_hls_copy_never_holds_more_than_max_bytes(server: HTTPServer, allow: HostAllowlist, tmp_path: Path) -> None:
    # Four 100 kB segments arrive side by side, 10 kB every 20 ms: the cap counts them as they come.
    names = [f"s{n}.ts" for n in range(4)]
    for name in names:
        server.expect_request(f"/{name}").respond_with_handler(lambda _: chunked(*[b"s" * 10_000] * 10, pause=0.02))
    server.expect_request("/p.m3u8").respond_with_data(playlist(*(f"#EXTINF:2.0,\n{name}" for name in names)))
    (copy := tmp_path / "copy").mkdir()
    peak, done = 0, threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, held(copy))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with pytest.raises(FetchError, match="holds more than 150000 bytes"):
            download_hls(url(server, "/p.m3u8"), copy, allow=allow, max_bytes=150_000)
    finally:
        done.set()
        watcher.join()
    assert 0 < peak <= 150_000
    assert not list(copy.iterdir())  # nor is anything left


def test_hls_retried_download_counts_once_against_max_bytes(
    server: HTTPServer, allow: HostAllowlist, tmp_path: Path
) -> None:
    def cut_short(request: Request) -> Response:
        response = chunked(b"a" * 600)
        response.headers["Content-Length"] = "1000"
        return response

    server.expect_oneshot_request("/a.ts").respond_with_handler(cut_short)
    server.expect_request("/a.ts").respond_with_data(b"a" * 1000)
    server.expect_request("/b.ts").respond_with_data(b"b" * 1000)
    server.expect_request("/p.m3u8").respond_with_data(playlist("#EXTINF:2.0,", "a.ts", "#EXTINF:2.0,", "b.ts"))
    assert download_hls(url(server, "/p.m3u8"), tmp_path, allow=allow, max_bytes=2000, timeout=0.25).size == 2000
    assert len([r for r, _ in server.log if r.path == "/a.ts"]) == 2


def test_a_local_hls_copy_may_name_only_its_own_files(tmp_path: Path) -> None:
    (tmp_path / "copy").mkdir()
    (tmp_path / "seg00000.ts").write_bytes(b"outside the copy")
    for name in ("../seg00000.ts", "file:seg00000.ts", "crypto:seg00000.ts", "seg.ts"):
        index = tmp_path / "copy" / "index.m3u8"
        index.write_text(f"#EXTM3U\n#EXTINF:2.0,\n{name}\n#EXT-X-ENDLIST\n")
        with pytest.raises(ValueError, match="not a file of its copy"):
            hls_copy_digest(index)


def test_hls_separate_audio_rendition_is_refused(server: HTTPServer, allow: HostAllowlist, tmp_path: Path) -> None:
    server.expect_request("/master.m3u8").respond_with_data(
        '#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aac",NAME="en",URI="audio.m3u8"\n'
        '#EXT-X-STREAM-INF:BANDWIDTH=900000,AUDIO="aac"\nvideo.m3u8\n'
    )
    with pytest.raises(FetchError, match="separate audio renditions"):
        download_hls(url(server, "/master.m3u8"), tmp_path, allow=allow)


def test_hls_absolute_path_is_fetched_over_http_never_from_disk(
    server: HTTPServer, allow: HostAllowlist, tmp_path: Path
) -> None:
    server.expect_request("/live/index.m3u8").respond_with_data(playlist("#EXTINF:4.0,", "/etc/passwd"))
    server.expect_request("/etc/passwd").respond_with_data(b"served by the media host")
    download_hls(url(server, "/live/index.m3u8"), tmp_path, allow=allow)
    assert (tmp_path / "seg00000.ts").read_bytes() == b"served by the media host"
    assert [r.path for r, _ in server.log] == ["/live/index.m3u8", "/etc/passwd"]


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        (["#EXTINF:4.0,", "file:///etc/passwd"], "playlist entry scheme 'file' is not allowed"),
        (["#EXTINF:4.0,", "concat:a.ts|b.ts"], "playlist entry scheme 'concat' is not allowed"),
        (["#EXTINF:4.0,", "data:video/mp2t;base64,R0lG"], "playlist entry scheme 'data' is not allowed"),
        (["#EXTINF:4.0,", "//evil.example/a.ts"], "playlist entry host evil.example is not in RECORDER_MEDIA_HOSTS"),
        (['#EXT-X-KEY:METHOD=AES-128,URI="file:///etc/passwd"', "#EXTINF:4.0,", "a.ts"], "scheme 'file'"),
        (['#EXT-X-MAP:URI="file:///etc/passwd"', "#EXTINF:4.0,", "a.ts"], "scheme 'file'"),
        (['#EXT-X-KEY:METHOD=SAMPLE-AES-CTR,URI="skd://x"', "#EXTINF:4.0,", "a.ts"], "unsupported encryption"),
        (
            ['#EXT-X-KEY:METHOD=AES-128,URI="k.key",IV="0x1,URI=\\"file:///etc/passwd\\""', "#EXTINF:4.0,", "a.ts"],
            "malformed IV",
        ),
        (["#EXTINF:4.0,", '#EXT-X-BYTERANGE:10@0,URI="file:///etc/passwd"', "a.ts"], "malformed BYTERANGE"),
        (["#EXTINF:4.0,", "http://[::1/a.ts"], "playlist entry is not a valid URL: 'http://[::1/a.ts'"),
        (['#EXT-X-KEY:METHOD=AES-128,URI="http://[k/k.key"', "#EXTINF:4.0,", "a.ts"], "not a valid URL"),
        (['#EXT-X-MAP:URI="http://[m/init.mp4"', "#EXTINF:4.0,", "a.ts"], "not a valid URL"),
        (["#EXTINF:nan,", "a.ts"], "malformed EXTINF"),
        (["#EXT-X-MEDIA-SEQUENCE:abc", "#EXTINF:4.0,", "a.ts"], "cannot be parsed"),
        ([], "has no segments"),
    ],
)
def test_hls_bad_entries_are_refused_before_any_download(
    server: HTTPServer, allow: HostAllowlist, tmp_path: Path, entries: list[str], reason: str
) -> None:
    server.expect_request("/live/index.m3u8").respond_with_data(playlist(*entries))
    server.expect_request("/live/a.ts").respond_with_data(b"a")
    with pytest.raises(FetchError) as excinfo:
        download_hls(url(server, "/live/index.m3u8"), tmp_path, allow=allow)
    assert reason in refused(excinfo)
    assert [r.path for r, _ in server.log] == ["/live/index.m3u8"]
    assert not any(PASSWD in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


def test_hls_malformed_variant_uri_is_refused(server: HTTPServer, allow: HostAllowlist, tmp_path: Path) -> None:
    variant = "http://[x/" + "v" * 200 + ".m3u8"
    server.expect_request("/m.m3u8").respond_with_data(f"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n{variant}\n")
    with pytest.raises(FetchError) as excinfo:
        download_hls(url(server, "/m.m3u8"), tmp_path, allow=allow)
    assert refused(excinfo) == f"playlist entry is not a valid URL: {variant[:100]!r}"  # named, but cut short


def test_hls_self_referencing_master_is_refused(server: HTTPServer, allow: HostAllowlist, tmp_path: Path) -> None:
    server.expect_request("/m.m3u8").respond_with_data("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nm.m3u8\n")
    with pytest.raises(FetchError) as excinfo:
        download_hls(url(server, "/m.m3u8"), tmp_path, allow=allow)
    assert f"playlist {url(server, '/m.m3u8')} nests master playlists deeper than 2 levels" in refused(excinfo)
    assert len(server.log) == 2


def test_hls_deeply_nested_masters_are_refused(server: HTTPServer, allow: HostAllowlist, tmp_path: Path) -> None:
    for n in range(1, 4):
        server.expect_request(f"/m{n}.m3u8").respond_with_data(
            f"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nm{n + 1}.m3u8\n"
        )
    server.expect_request("/m4.m3u8").respond_with_data(playlist("#EXTINF:4.0,", "a.ts"))
    with pytest.raises(FetchError) as excinfo:
        download_hls(url(server, "/m1.m3u8"), tmp_path, allow=allow, max_depth=3)
    assert f"playlist {url(server, '/m1.m3u8')} nests master playlists deeper than 3 levels" in refused(excinfo)


def test_hls_too_many_segments(server: HTTPServer, allow: HostAllowlist, tmp_path: Path) -> None:
    server.expect_request("/big.m3u8").respond_with_data(playlist(*["#EXTINF:1.0,\ns.ts"] * 100_000))
    with pytest.raises(FetchError) as excinfo:
        download_hls(url(server, "/big.m3u8"), tmp_path, allow=allow)
    assert "has 100000 entries, more than 20000" in refused(excinfo)


def test_hls_not_a_playlist(server: HTTPServer, allow: HostAllowlist, tmp_path: Path) -> None:
    server.expect_request("/a.m3u8").respond_with_data(PASSWD[:200])
    with pytest.raises(FetchError, match="does not start with #EXTM3U"):
        download_hls(url(server, "/a.m3u8"), tmp_path, allow=allow)


def test_hls_failed_segment_fails_the_whole_copy(server: HTTPServer, allow: HostAllowlist, tmp_path: Path) -> None:
    server.expect_request("/p.m3u8").respond_with_data(
        playlist(*(f"#EXTINF:4.0,\n{name}" for name in ("a.ts", "slow.ts", "gone.ts")))
    )
    server.expect_request("/a.ts").respond_with_data(b"a")
    server.expect_request("/slow.ts").respond_with_handler(lambda _: chunked(*[b"s"] * 100, pause=0.02))  # 2 s
    server.expect_request("/gone.ts").respond_with_data(b"", status=404)
    started = time.monotonic()
    with pytest.raises(FetchError, match="gone.ts: HTTP 404"):
        download_hls(url(server, "/p.m3u8"), tmp_path, allow=allow)
    # The slow download stops at once, and what was written is removed.
    assert time.monotonic() - started < 1 and not list(tmp_path.iterdir())
