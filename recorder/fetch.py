"""Safe downloads of recorded fragments: allowlisted hosts, public addresses, pinned connections.

Every URL we fetch comes from an attacker-controllable callback or playlist, so each request:

- must be http(s), carry no user info, and name a host in ``RECORDER_MEDIA_HOSTS``;
- resolves its host once; every address must be public unless that exact ``host:port`` is
  listed, and the connection goes to the address that was checked (urllib3 connects to the IP
  while Host, SNI and certificate checks use the name), so DNS rebinding cannot redirect it;
- follows at most ``MAX_REDIRECTS`` redirects by hand, each checked the same way;
- streams to disk under a byte cap, hashing as it goes;
- has one wall-clock deadline per attempt, over connecting, headers and body (_Deadline); the
  name lookup before it is bounded only by the system resolver.

urllib3 is used directly rather than requests: we need neither sessions nor cookies, and
requests would honour ``*_PROXY`` variables, which would hand name resolution to a proxy.
SSRF libraries were considered: advocate needs urllib3 < 2, and requests-hardened checks only
the first resolved address and can only allow loopback globally, not per ``host:port``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ipaddress
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, NamedTuple, TypeVar
from urllib.parse import SplitResult, urljoin, urlsplit

import m3u8
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.response import BaseHTTPResponse

from recorder.errors import FetchError

MAX_REDIRECTS = 3
MAX_BYTES = 16 * 1024**3  # cap for a file whose size nobody told us
PLAYLIST_MAX_BYTES = 4 * 1024**2
AES_KEY_BYTES = 16
# Deadline: an attempt may take 4 timeouts plus one second per MIN_RATE bytes received, so
# dripped headers or a trickle fail after ~4 timeouts while a large file on a sane link never does.
MIN_RATE = 100_000  # bytes/s
DEADLINE_TIMEOUTS = 4
DEADLINE_POLL = 0.1  # seconds between shutdowns once an attempt is past its deadline
BACKOFF = 0.5  # seconds before the first retry; doubles each time
HLS_WORKERS = 4
CHUNK = 1024 * 1024
SEGMENT_SUFFIXES = {".ts", ".m4s", ".mp4", ".aac", ".m4a", ".mp3"}
HLS_INDEX = "index.m3u8"  # the playlist of a local HLS copy

_HOST = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
_PATTERN = re.compile(r"(?:\[(?P<v6>[0-9a-f:.]+)\]|(?P<host>(?:\*\.)?[a-z0-9_.-]+))(?::(?P<port>\d{1,5}))?")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Attribute values copied into our playlist: a stray quote or comma could smuggle in a URI.
_IV = re.compile(r"0x[0-9a-f]{1,32}", re.IGNORECASE)
_BYTERANGE = re.compile(r"\d{1,15}(@\d{1,15})?")
_LOCAL_NAME = re.compile(r"(?:seg|init|key)\d{5,}\.[a-z0-9]{1,4}")  # what download_hls names the files it writes
_REDIRECTS = {301, 302, 303, 307, 308}
_TRANSIENT = {408, 429}  # plus every 5xx
_DEFAULT_PORTS = {"http": 80, "https": 443}

T = TypeVar("T")
_Meter = Callable[[int], object]  # told a file's size as it grows; may raise to stop its download


class _Deadline:
    """One attempt's wall-clock deadline, over connecting, headers and body: DEADLINE_TIMEOUTS
    timeouts plus a second per MIN_RATE bytes received. urllib3's timeouts bound each read, not
    their sum, so a server dripping bytes just within them could hold a worker for ever. When the
    deadline passes, a watchdog thread shuts the socket in use down, ending the read blocked on it.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.received = 0
        self.expired = False
        self._started = time.monotonic()
        self._stop_read: Callable[[], object] | None = None
        self._lock = threading.Lock()
        self._over = threading.Event()

    def __enter__(self) -> _Deadline:
        _ATTEMPT.deadline = self
        threading.Thread(target=self._watch, name="fetch-deadline", daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:  # from here on the watchdog touches no socket: it may serve another attempt
            self._over.set()
        _ATTEMPT.deadline = None

    def watch(self, stop_read: Callable[[], object]) -> None:
        """How to stop the read in progress: the connection's, then (its socket may go back to the
        pool once the body is read) the response's."""
        with self._lock:
            self._stop_read = stop_read

    def check(self, url: str) -> None:
        if self.expired:
            raise FetchError(f"GET {_label(url)}: too slow, {self.received} bytes in {self._elapsed():.1f} s")

    def _elapsed(self) -> float:
        return time.monotonic() - self._started

    def _left(self) -> float:
        return DEADLINE_TIMEOUTS * self.timeout + self.received / MIN_RATE - self._elapsed()

    def _watch(self) -> None:
        # Past the deadline it shuts down again every DEADLINE_POLL s: a socket may have been opening.
        while not self._over.wait(max(self._left(), DEADLINE_POLL)):
            with self._lock:
                if self._over.is_set() or self._left() > 0:
                    continue
                self.expired = True
                if self._stop_read:
                    with contextlib.suppress(OSError, RuntimeError, TypeError, ValueError):  # closed or released
                        self._stop_read()


class _Attempt(threading.local):
    deadline: _Deadline | None = None


_ATTEMPT = _Attempt()  # the deadline of the attempt this thread is making


class _WatchedHTTP(HTTPConnection):
    """Puts itself under its thread's attempt deadline when it connects (a TLS handshake too)
    and when it sends a request (a pooled connection does not connect again)."""

    def connect(self) -> None:
        self._watched()
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        self._watched()
        super().request(*args, **kwargs)

    def _watched(self) -> None:
        if _ATTEMPT.deadline:  # set during every attempt, and our pools serve nothing else
            _ATTEMPT.deadline.watch(self._shut)

    def _shut(self) -> None:
        sock = self.sock
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)


class _WatchedHTTPS(_WatchedHTTP, HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTP


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPS


_POOLS = urllib3.PoolManager(num_pools=32, maxsize=HLS_WORKERS)
_POOLS.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


def _norm_host(host: str) -> str:
    """Lower-case, no trailing dot or brackets, IPv6 in canonical form."""
    host = host.strip("[]").lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class HostAllowlist:
    """``RECORDER_MEDIA_HOSTS``: ``host`` (any port), ``host:port``, ``*.suffix`` (subdomains only)."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self._hosts: set[str] = set()
        self._exact: set[tuple[str, int]] = set()
        self._suffixes: set[tuple[str, int | None]] = set()
        for raw in patterns:
            pattern = raw.strip().lower()
            if not pattern:
                continue
            match = _PATTERN.fullmatch(pattern)
            host = _norm_host(match["v6"] or match["host"]) if match else ""
            port = int(match["port"]) if match and match["port"] else None
            valid = _is_ip(host) if match and match["v6"] else bool(_HOST.fullmatch(host.removeprefix("*.")))
            if not valid or (port is not None and not 0 < port < 65536):
                raise ValueError(
                    f"bad RECORDER_MEDIA_HOSTS entry {raw!r}: use host, host:port, *.suffix or [ipv6]:port"
                )
            if host.startswith("*."):
                self._suffixes.add((host[1:], port))
            elif port is None:
                self._hosts.add(host)
            else:
                self._exact.add((host, port))

    def allows(self, host: str, port: int) -> bool:
        host = _norm_host(host)
        if host in self._hosts or (host, port) in self._exact:
            return True
        return not _is_ip(host) and any(host.endswith(sfx) and p in (None, port) for sfx, p in self._suffixes)

    def explicitly_allows(self, host: str, port: int) -> bool:
        """Only an exact ``host:port`` entry may reach a non-public address."""
        return (_norm_host(host), port) in self._exact


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size: int
    sha256: str


class _Target(NamedTuple):
    scheme: str
    host: str  # normalised, no brackets
    port: int
    target: str  # path and query sent on the request line
    label: str  # scheme://host[:port]/path for messages: never the query, which may hold a token


def _split(url: str, what: str, base: str = "") -> SplitResult:
    """``url`` split, made absolute against ``base`` first. urllib raises ValueError on a malformed
    URL (an unclosed IPv6 bracket, say): from a callback, a redirect or a playlist, that is a
    permanent FetchError naming it."""
    try:
        return urlsplit(urljoin(base, url))
    except ValueError:
        raise FetchError(f"{what} is not a valid URL: {url[:100]!r}", permanent=True) from None


def _parse(url: str, allow: HostAllowlist, what: str) -> _Target:
    parts = _split(url.strip(), what)
    if parts.scheme not in _DEFAULT_PORTS:
        raise FetchError(
            f"{what} scheme {parts.scheme or '(none)'!r} is not allowed (only http and https)", permanent=True
        )
    if "@" in parts.netloc:
        raise FetchError(f"{what} must not carry user info (user@host)", permanent=True)
    host = _norm_host(parts.hostname or "")
    if not (_is_ip(host) or _HOST.fullmatch(host)):
        raise FetchError(f"{what} has no valid host: {parts.netloc!r}", permanent=True)
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise FetchError(f"{what} has an invalid port: {parts.netloc!r}", permanent=True) from None
    shown = f"[{host}]" if ":" in host else host
    if parts.port:
        shown += f":{port}"
    if not allow.allows(host, port):
        raise FetchError(f"{what} host {shown} is not in RECORDER_MEDIA_HOSTS", permanent=True)
    path = parts.path or "/"
    target = f"{path}?{parts.query}" if parts.query else path
    return _Target(parts.scheme, host, port, target, f"{parts.scheme}://{shown}{path}")


def check_url(url: str, allow: HostAllowlist) -> None:
    """Refuse a video_url we would never fetch. Syntax and allowlist only: no DNS lookup."""
    _parse(url, allow, "video_url")


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        # Judge IPv6 forms that carry an IPv4 address (mapped, 6to4, NAT64) by that address.
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        ip = embedded or ip
    return ip.is_global and not ip.is_multicast


def _resolve(t: _Target, allow: HostAllowlist) -> str:
    """Resolve once and return the address to connect to, after vetting every address."""
    try:
        infos = socket.getaddrinfo(t.host, t.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise FetchError(f"cannot resolve {t.host}: {exc}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow.explicitly_allows(t.host, t.port):
        for address in addresses:
            if not _is_public(ipaddress.ip_address(address)):
                raise FetchError(
                    f"{t.host} resolves to {address}, which is not a public address "
                    f"(only an exact host:port entry in RECORDER_MEDIA_HOSTS permits that)",
                    permanent=True,
                )
    return addresses[0]


def _close(resp: BaseHTTPResponse) -> None:
    # A fully read response has already gone back to the pool; this closes a half-read one
    # instead, so its leftover bytes can never be read as the next response.
    resp.close()
    resp.release_conn()


def _request(url: str, allow: HostAllowlist, deadline: _Deadline, what: str) -> tuple[BaseHTTPResponse, str]:
    t = _parse(url, allow, what)
    address = _resolve(t, allow)
    # The pool connects to the vetted address; TLS SNI and the certificate check use the name.
    pool = _POOLS.connection_from_host(
        f"[{address}]" if ":" in address else address,
        t.port,
        t.scheme,
        pool_kwargs={"server_hostname": t.host} if t.scheme == "https" else None,
    )
    host = f"[{t.host}]" if ":" in t.host else t.host
    resp = pool.urlopen(
        "GET",
        t.target,
        headers={
            "Host": host if t.port == _DEFAULT_PORTS[t.scheme] else f"{host}:{t.port}",
            "User-Agent": "recorder-fetch",
            "Accept-Encoding": "identity",
        },
        redirect=False,
        retries=False,
        preload_content=False,
        decode_content=False,
        timeout=urllib3.Timeout(connect=deadline.timeout, read=deadline.timeout),
    )
    deadline.watch(resp.shutdown)
    return resp, t.label


def _open(url: str, allow: HostAllowlist, deadline: _Deadline, what: str) -> tuple[BaseHTTPResponse, str, str]:
    """GET following redirects by hand; returns a 200 response, its label and its final URL."""
    for _ in range(MAX_REDIRECTS + 1):
        resp, label = _request(url, allow, deadline, what)
        status = resp.status
        if status == 200:
            return resp, label, url
        location = resp.headers.get("Location")
        _close(resp)
        if status not in _REDIRECTS or not location:
            raise FetchError(f"GET {label}: HTTP {status}", permanent=not (status >= 500 or status in _TRANSIENT))
        url, what = _split(location, "redirect target", url).geturl(), "redirect target"
    raise FetchError(f"GET {label}: more than {MAX_REDIRECTS} redirects", permanent=True)


def _stream(
    resp: BaseHTTPResponse, sink: BinaryIO, label: str, limit: int, deadline: _Deadline, meter: _Meter | None
) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    # read1 returns whatever has arrived, so the deadline grows as the bytes come.
    while chunk := resp.read1(CHUNK, decode_content=False):
        size += len(chunk)
        if size > limit:
            raise FetchError(f"GET {label}: body exceeds {limit} bytes", permanent=True)
        deadline.received = size
        if meter:
            meter(size)  # before the write: it may stop the transfer
        digest.update(chunk)
        sink.write(chunk)
    return size, digest.hexdigest()


def _check_headers(resp: BaseHTTPResponse, label: str, expected_size: int | None, limit: int) -> None:
    declared = resp.length_remaining
    if expected_size is not None and declared is not None and declared != expected_size:
        raise FetchError(f"GET {label}: Content-Length {declared} but expected {expected_size} bytes", permanent=True)
    if declared is not None and declared > limit:
        raise FetchError(f"GET {label}: Content-Length {declared} exceeds {limit} bytes", permanent=True)
    encoding = resp.headers.get("Content-Encoding", "identity")
    if encoding.strip().lower() not in ("identity", ""):  # we would store it still compressed
        raise FetchError(
            f"GET {label}: server sent Content-Encoding {encoding[:40]!r} although identity was asked for",
            permanent=True,
        )


def _get(
    url: str,
    sink: BinaryIO,
    *,
    allow: HostAllowlist,
    expected_size: int | None,
    limit: int,
    timeout: float,
    what: str,
    meter: _Meter | None = None,
) -> tuple[int, str, str]:
    """One attempt, under one deadline: returns size, sha256 and the final URL after redirects."""
    with _Deadline(timeout) as deadline:
        try:
            resp, label, final_url = _open(url, allow, deadline, what)
            try:
                _check_headers(resp, label, expected_size, limit)
                size, sha256 = _stream(resp, sink, label, limit, deadline, meter)
            finally:
                _close(resp)
        except (urllib3.exceptions.HTTPError, OSError):
            deadline.check(url)  # the watchdog broke the connection
            raise
        deadline.check(url)  # a socket shut down mid-body can look like the body's end
    if expected_size is not None and size != expected_size:
        raise FetchError(f"GET {label}: got {size} bytes but expected {expected_size}", permanent=True)
    return size, sha256, final_url


def _retrying(attempt: Callable[[], T], url: str, attempts: int) -> T:
    """Retry transient failures (network errors, timeouts, 5xx) with exponential backoff."""
    for n in range(attempts):
        try:
            return attempt()
        except FetchError as exc:
            if exc.permanent:
                raise
            reason = exc.reason
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            reason = f"GET {_label(url)}: {exc}"
        if n + 1 < attempts:
            time.sleep(BACKOFF * 2**n)
    raise FetchError(f"{reason} (gave up after {attempts} attempts)", permanent=False)


def _download(
    url: str,
    dest: Path,
    *,
    allow: HostAllowlist,
    expected_size: int | None,
    limit: int,
    timeout: float,
    attempts: int,
    what: str,
    meter: _Meter | None = None,
) -> Downloaded:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")  # a partial file never sits under the final name

    def attempt() -> tuple[int, str, str]:
        if meter:
            meter(0)  # each attempt starts the file again
        with part.open("wb") as sink:
            return _get(
                url,
                sink,
                allow=allow,
                expected_size=expected_size,
                limit=limit,
                timeout=timeout,
                what=what,
                meter=meter,
            )

    try:
        size, sha256, _ = _retrying(attempt, url, attempts)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    part.replace(dest)
    return Downloaded(dest, size, sha256)


def download(
    url: str,
    dest: Path,
    *,
    allow: HostAllowlist,
    expected_size: int | None,
    timeout: float = 30,
    attempts: int = 3,
    max_bytes: int | None = None,
) -> Downloaded:
    """Download ``url`` to ``dest``. A size other than ``expected_size``, or over ``max_bytes``
    (MAX_BYTES if not given) when the size is not known, is a permanent error."""
    limit = expected_size if expected_size is not None else MAX_BYTES if max_bytes is None else max_bytes
    return _download(
        url,
        dest,
        allow=allow,
        expected_size=expected_size,
        limit=limit,
        timeout=timeout,
        attempts=attempts,
        what="video_url",
    )


def _fetch_playlist(
    url: str, *, allow: HostAllowlist, timeout: float, attempts: int, max_segments: int, what: str
) -> tuple[m3u8.M3U8, str]:
    def attempt() -> tuple[bytes, str]:
        sink = BytesIO()
        _, _, final_url = _get(
            url, sink, allow=allow, expected_size=None, limit=PLAYLIST_MAX_BYTES, timeout=timeout, what=what
        )
        return sink.getvalue(), final_url

    body, final_url = _retrying(attempt, url, attempts)
    label = _label(final_url)
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise FetchError(f"playlist {label} is not UTF-8 text", permanent=True) from None
    if not text.lstrip().startswith("#EXTM3U"):
        raise FetchError(f"playlist {label} does not start with #EXTM3U", permanent=True)
    # Count URI lines before parsing, so a huge playlist is refused cheaply.
    entries = sum(1 for line in text.splitlines() if line.strip() and not line.startswith("#"))
    if entries > max_segments:
        raise FetchError(f"playlist {label} has {entries} entries, more than {max_segments}", permanent=True)
    try:
        return m3u8.loads(text), final_url
    except Exception as exc:  # the parser's errors on hostile input are not a documented set
        raise FetchError(f"playlist {label} cannot be parsed: {exc}", permanent=True) from exc


def _media_playlist(
    url: str, *, allow: HostAllowlist, timeout: float, attempts: int, max_segments: int, max_depth: int
) -> tuple[m3u8.M3U8, str]:
    """Follow master playlists to the best variant, at most ``max_depth`` playlists deep."""
    what, first = "video_url", url
    for _ in range(max_depth):
        playlist, url = _fetch_playlist(
            url, allow=allow, timeout=timeout, attempts=attempts, max_segments=max_segments, what=what
        )
        if not playlist.is_variant:
            if not playlist.segments:
                raise FetchError(f"playlist {_label(url)} has no segments", permanent=True)
            return playlist, url
        if not playlist.playlists:
            raise FetchError(f"master playlist {_label(url)} has no variants", permanent=True)
        best = max(playlist.playlists, key=lambda v: (v.stream_info.bandwidth or 0, _pixels(v.stream_info.resolution)))
        group = best.stream_info.audio
        if group and any(m.uri for m in playlist.media if m.type == "AUDIO" and m.group_id == group):
            # Fetching only the variant would silently drop the sound.
            raise FetchError(
                f"master playlist {_label(url)} has separate audio renditions (not supported)", permanent=True
            )
        url, what = _split(best.uri, "playlist entry", url).geturl(), "playlist entry"
    raise FetchError(f"playlist {_label(first)} nests master playlists deeper than {max_depth} levels", permanent=True)


def _label(url: str) -> str:
    return urlsplit(url)._replace(query="", fragment="").geturl()


def _attribute(value: str, pattern: re.Pattern[str], name: str, playlist_url: str) -> str:
    if not pattern.fullmatch(value):
        raise FetchError(f"playlist {_label(playlist_url)} has a malformed {name}: {value[:40]!r}", permanent=True)
    return value


def _pixels(resolution: tuple[int, int] | None) -> int:
    return resolution[0] * resolution[1] if resolution else 0


class _Stopped(Exception):
    """Ends a download of an HLS copy that has failed elsewhere: neither retried nor reported."""


class _Budget:
    """The bytes the files of one HLS copy may hold in all, shared by the threads fetching them:
    a file growing past it fails, and once one has failed the others stop at their next chunk."""

    def __init__(self, cap: int, playlist: str) -> None:
        self.cap = cap
        self.error: BaseException | None = None  # the first failure, the one reported
        self._playlist = playlist
        self._sizes: dict[str, int] = {}
        self._total = 0
        self._lock = threading.Lock()

    def grew(self, name: str, size: int) -> None:
        """``name`` is about to hold ``size`` bytes."""
        with self._lock:
            if self.error is not None:
                raise _Stopped
            self._total += size - self._sizes.get(name, 0)
            self._sizes[name] = size
            if self._total > self.cap:
                raise FetchError(f"{self._playlist} holds more than {self.cap} bytes", permanent=True)

    def fail(self, error: BaseException) -> None:
        with self._lock:
            self.error = self.error or error


def download_hls(
    url: str,
    dest_dir: Path,
    *,
    allow: HostAllowlist,
    timeout: float = 30,
    max_segments: int = 20000,
    max_depth: int = 2,
    attempts: int = 3,
    max_bytes: int | None = None,
) -> Downloaded:
    """Copy an HLS playlist and everything it references, at most ``max_bytes`` in all
    (MAX_BYTES if not given, as download() allows a file of unknown size), into ``dest_dir``.

    Returns ``dest_dir/index.m3u8`` (HLS_INDEX), a VOD playlist naming only local files (seg00000.ts,
    key00000.key, init00000.mp4), for ffmpeg with ``-protocol_whitelist file,crypto``. ffmpeg's
    hls demuxer refuses a ``.key`` file by its extension, so an encrypted copy also needs
    ``-allowed_extensions`` naming it (stitch's HLS_EXTENSIONS). Its size and sha256 are
    hls_copy_digest's. On failure, the files it wrote into ``dest_dir`` are removed again.
    """
    playlist, base = _media_playlist(
        url, allow=allow, timeout=timeout, attempts=attempts, max_segments=max_segments, max_depth=max_depth
    )
    files: dict[str, tuple[str, int | None]] = {}  # absolute URL -> (local name, expected size)
    counts: dict[str, int] = {}

    def local(uri: str, prefix: str, suffix: str, size: int | None = None) -> str:
        absolute = _split(uri, "playlist entry", base).geturl()
        _parse(absolute, allow, "playlist entry")  # refuse file:, data:, concat:, other hosts up front
        if absolute not in files:
            counts[prefix] = counts.get(prefix, 0) + 1
            files[absolute] = (f"{prefix}{counts[prefix] - 1:05d}{suffix}", size)
        return files[absolute][0]

    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{playlist.version or 3}",
        f"#EXT-X-TARGETDURATION:{playlist.target_duration or 0}",
        # The media sequence number is the default AES-128 IV, so it must survive the copy.
        f"#EXT-X-MEDIA-SEQUENCE:{playlist.media_sequence or 0}",
        "#EXT-X-PLAYLIST-TYPE:VOD",
    ]
    key_line = "#EXT-X-KEY:METHOD=NONE"  # the state before any key tag
    map_line = None
    for segment in playlist.segments:
        if segment.discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
        key = segment.key
        new_key = "#EXT-X-KEY:METHOD=NONE"
        if key is not None and key.method != "NONE":
            if key.method not in ("AES-128", "SAMPLE-AES") or not key.uri:
                raise FetchError(f"playlist {_label(base)} uses unsupported encryption {key.method}", permanent=True)
            new_key = f'#EXT-X-KEY:METHOD={key.method},URI="{local(key.uri, "key", ".key", AES_KEY_BYTES)}"'
            if key.iv:
                new_key += f",IV={_attribute(key.iv, _IV, 'IV', base)}"
        if new_key != key_line:
            lines.append(new_key)
            key_line = new_key
        init = segment.init_section
        if init is not None:
            new_map = f'#EXT-X-MAP:URI="{local(init.uri, "init", ".mp4")}"'
            if init.byterange:
                new_map += f',BYTERANGE="{_attribute(init.byterange, _BYTERANGE, "BYTERANGE", base)}"'
            if new_map != map_line:
                lines.append(new_map)
                map_line = new_map
        if not (math.isfinite(segment.duration) and segment.duration >= 0):
            raise FetchError(f"playlist {_label(base)} has a malformed EXTINF: {segment.duration}", permanent=True)
        lines.append(f"#EXTINF:{segment.duration},")
        if segment.byterange:
            lines.append(f"#EXT-X-BYTERANGE:{_attribute(segment.byterange, _BYTERANGE, 'BYTERANGE', base)}")
        suffix = PurePosixPath(_split(segment.uri, "playlist entry", base).path).suffix.lower()
        lines.append(local(segment.uri, "seg", suffix if suffix in SEGMENT_SUFFIXES else ".ts"))
    lines.append("#EXT-X-ENDLIST")

    dest_dir.mkdir(parents=True, exist_ok=True)
    budget = _Budget(MAX_BYTES if max_bytes is None else max_bytes, f"playlist {_label(base)}")

    def fetch_file(file_url: str, name: str, size: int | None) -> None:
        try:
            _download(
                file_url,
                dest_dir / name,
                allow=allow,
                expected_size=size,
                limit=min(budget.cap, MAX_BYTES if size is None else size),
                timeout=timeout,
                attempts=attempts,
                what="playlist entry",
                meter=functools.partial(budget.grew, name),
            )
        except BaseException as error:
            budget.fail(error)
            raise

    index = dest_dir / HLS_INDEX
    try:
        with ThreadPoolExecutor(HLS_WORKERS) as pool:
            for file_url, (name, size) in files.items():
                pool.submit(fetch_file, file_url, name, size)
        if budget.error is not None:
            raise budget.error
        index.write_text("\n".join(lines) + "\n")
        return Downloaded(index, *hls_copy_digest(index))
    except BaseException as error:
        budget.fail(error)  # if it came here first (a time limit, say), what still runs stops too
        for name in [HLS_INDEX, *(name for name, _ in files.values())]:
            (dest_dir / name).unlink(missing_ok=True)
        raise


def hls_copy_digest(index: Path) -> tuple[int, str]:
    """Size and SHA-256 of a local copy made by download_hls: over its playlist, then each file
    the playlist names (keys, init sections, segments) once, in playlist order; the size counts
    those files. ValueError if the playlist names anything download_hls does not write."""
    text = index.read_bytes()
    try:
        playlist = m3u8.loads(text.decode("utf-8"))
    except Exception as exc:  # changed on disk: the parser's errors are not a documented set
        raise ValueError(f"{index} cannot be parsed: {exc}") from exc
    names = dict.fromkeys(
        uri
        for segment in playlist.segments
        for uri in (
            segment.key.uri if segment.key else None,
            segment.init_section.uri if segment.init_section else None,
            segment.uri,
        )
        if uri
    )
    digest, total = hashlib.sha256(text), 0
    for name in names:
        if not _LOCAL_NAME.fullmatch(name):
            raise ValueError(f"{index} names {name[:80]!r}, which is not a file of its copy")
        with (index.parent / name).open("rb") as f:
            while chunk := f.read(CHUNK):
                total += len(chunk)
                digest.update(chunk)
    return total, digest.hexdigest()
