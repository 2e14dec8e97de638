"""Real faults for real processes: a TCP proxy that slows, hangs or refuses; a Redis that can be
killed and restarted on its port; a media server that trickles; finding and killing the worker
process that is doing a given piece of work."""

from __future__ import annotations

import functools
import http.server
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psutil
import requests

from recorder import prefetched
from recorder.demo import free_port, process, wait_for
from tests.processes import CLI


class Proxy:
    """A TCP proxy on loopback in front of ``upstream``.

    ``mode``: ``pass`` forwards (upload direction slowed to ``rate`` bytes/s when set);
    ``refuse`` resets every connection, old and new; ``hang`` accepts and never answers.
    ``seen`` collects what clients sent (the first 64 KiB of each connection), so a test
    can wait for a given request.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.mode = "pass"
        self.rate: float | None = None
        self.seen = bytearray()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set(self, mode: str, rate: float | None = None) -> None:
        self.mode, self.rate = mode, rate
        if mode == "refuse":
            with self._lock:
                for sock in list(self._open):
                    _reset(sock)

    def close(self) -> None:
        self.set("refuse")
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == "refuse":
                _reset(client)
            elif self.mode == "hang":
                self._track(client)
            else:
                threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _track(self, *socks: socket.socket) -> None:
        with self._lock:
            self._open.update(socks)

    def _connect(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            _reset(client)
            return
        server.settimeout(None)
        self._track(client, server)
        threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
        self._pump(server, client, False)

    def _pump(self, source: socket.socket, sink: socket.socket, upload: bool) -> None:
        seen = 0
        try:
            while data := source.recv(65536 if self.rate is None or not upload else max(1024, int(self.rate / 10))):
                if upload:
                    if seen < 65536:
                        self.seen += data[: 65536 - seen]
                        seen += len(data)
                    if self.rate:
                        time.sleep(len(data) / self.rate)
                    if self.mode == "refuse":
                        break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self._lock:
                self._open.difference_update((source, sink))


def _reset(sock: socket.socket) -> None:
    """Close with a TCP RST, as a refusing or crashed server would."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass


class RedisProcess:
    """A memory-only redis-server that can be killed (-9) and restarted on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        wait_for(lambda: socket.create_connection(("127.0.0.1", self.port), timeout=1).close(), what="redis-server")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


class _Media(http.server.SimpleHTTPRequestHandler):
    """Serves files, ``server.rate`` bytes/s per response when set; counts responses in flight."""

    server: MediaServer

    def copyfile(self, source: Any, outputfile: Any) -> None:
        with self.server.lock:
            self.server.active += 1
        try:
            while chunk := source.read(16384):
                outputfile.write(chunk)
                if self.server.rate:
                    time.sleep(len(chunk) / self.server.rate)
        except OSError:
            pass  # the client went away (killed)
        finally:
            with self.server.lock:
                self.server.active -= 1

    def log_message(self, format: str, *args: Any) -> None:
        pass


class MediaServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), functools.partial(_Media, directory=str(root)))
        self.rate: float | None = None
        self.active = 0
        self.lock = threading.Lock()
        self.port = self.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"


@contextmanager
def media_server(root: Path) -> Iterator[MediaServer]:
    server = MediaServer(root)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.rate = None
        server.shutdown()
        server.server_close()


# --- processes ------------------------------------------------------------------


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def connected_to(pid: int, port: int) -> psutil.Process:
    """The descendant of ``pid`` with a TCP connection to ``port`` (raises until there is one)."""
    for child in descendants(pid):
        try:
            if any(c.raddr and c.raddr.port == port for c in child.net_connections("tcp")):
                return child
        except psutil.NoSuchProcess:
            continue
    raise LookupError(f"no process under {pid} is connected to port {port}")


def ffmpegs(work: Path) -> list[psutil.Process]:
    """ffmpeg and ffprobe processes working in ``work``, wherever they were started from (orphans too)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] in ("ffmpeg", "ffprobe") and str(work) in " ".join(proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def gone(procs: list[psutil.Process]) -> bool:
    _, alive = psutil.wait_procs(procs, timeout=0.1)
    if alive:
        raise RuntimeError(f"still running: {[p.pid for p in alive]}")
    return True


class Cluster:
    """``recorder serve`` and ``recorder worker`` processes for one scenario, to start, kill and restart."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env = tmp, env
        self.stack = ExitStack()
        self.logs: list[Path] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.base = ""

    def _start(self, args: list[str], name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}.log"
        self.logs.append(log)
        proc = self.stack.enter_context(process([*CLI, *args], env, log))
        self.procs.append(proc)
        return proc

    def serve(self, **overrides: str) -> subprocess.Popen[bytes]:
        port = free_port()
        proc = self._start(
            ["serve", "--port", str(port), "--workers", "1"], f"serve{len(self.logs)}", self._env(overrides)
        )
        self.base = f"http://127.0.0.1:{port}"
        wait_for(lambda: requests.get(f"{self.base}/healthz", timeout=1).raise_for_status(), what="recorder serve")
        return proc

    def worker(
        self, name: str, *args: str, beat: bool = True, concurrency: int = 2, **overrides: str
    ) -> subprocess.Popen[bytes]:
        env = self._env({"work_dir": str(self.work / name), **overrides})
        argv = ["worker", "--beat" if beat else "--no-beat", f"--concurrency={concurrency}"]
        return self._start([*argv, "--without-mingle", "--without-gossip", *args], name, env)

    @property
    def work(self) -> Path:
        return self.tmp / "work"

    def _env(self, overrides: dict[str, str]) -> dict[str, str]:
        return {**self.env, **{f"RECORDER_{name.upper()}": value for name, value in overrides.items()}}

    def log_text(self) -> str:
        return "".join(log.read_text(errors="replace") for log in self.logs if log.exists())

    def close(self) -> None:
        for proc in self.procs:  # the scenario is over: no graceful shutdown to wait for
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        self.stack.close()
        for log in self.logs:  # shown by pytest when the test failed
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")


def kill(proc: psutil.Process | subprocess.Popen[bytes]) -> None:
    """kill -9, as the OOM killer or a lost machine would."""
    os.kill(proc.pid, signal.SIGKILL)


def leftovers(work: Path) -> list[Path]:
    """What a stitch or a prefetch left in the workers' work dirs (``work/<worker>``): any file
    but beat's schedule, and any folder but the (empty) folder of prefetched copies."""
    return [
        p
        for p in work.rglob("*")
        if (p.is_file() and not p.name.startswith("celerybeat-schedule"))
        or (p.is_dir() and p.parent != work and p.name != prefetched.FOLDER)
    ]
