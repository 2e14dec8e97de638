"""``recorder demo``: the main job end to end on embedded defaults.

Starts a private redis-server, ``recorder worker`` and ``recorder serve``; makes
sample fragments with ffmpeg and serves them on loopback; sends them signed
callbacks (shuffled, one duplicated); waits for the archive; prints it.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import requests

from recorder.callbacks.tencent import expected_sign
from recorder.samples import make_clip

GAP_SECONDS = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[str]:
    """A private, memory-only redis-server; yields its URL."""
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed: run `make demo`, which installs it")
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close(), what="redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(process)


@contextmanager
def media_server(root: Path) -> Iterator[str]:
    """Serve a directory over HTTP on loopback; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def process(args: list[str], env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(check: Any, *, what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except Exception:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} did not come up within {timeout:.0f} s") from None
            time.sleep(0.2)


def signed_record_callback(
    *,
    key: str,
    stream_id: str,
    file_id: str,
    url: str,
    start: float,
    seconds: float,
    size: int,
    app: str = "demo.example.com",
    fmt: str = "mp4",
    session_id: str = "demo",
) -> dict[str, Any]:
    """A Tencent CSS event_type 100 body, signed as Tencent signs it."""
    t = int(time.time()) + 600
    return {
        "event_type": 100,
        "appid": 1250000001,
        "app": app,
        "appname": "live",
        "stream_id": stream_id,
        "channel_id": stream_id,
        "file_id": file_id,
        "record_file_id": file_id,
        "file_format": fmt,
        "task_id": "",
        "start_time": int(start),
        "end_time": int(start + seconds),
        "start_time_usec": 0,
        "end_time_usec": 0,
        "duration": seconds,
        "file_size": size,
        "video_url": url,
        "media_start_time": 0,
        "record_bps": 0,
        "callback_ext": json.dumps({"video_codec": "h264", "session_id": session_id}),
        "t": t,
        "sign": expected_sign(key, str(t)),
    }


def run_demo(*, fragments: int = 3, seconds: int = 4) -> int:
    try:
        return _run(fragments, seconds)
    except TimeoutError as error:
        print(f"demo failed: {error}", file=sys.stderr)
        return 1


def _run(fragments: int, seconds: int) -> int:
    began = time.monotonic()
    key, token = secrets.token_hex(16), secrets.token_hex(16)
    stream_id = f"demo_class_{int(time.time())}"
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="recorder-demo-")))
        print(f"making {fragments} sample fragments of {seconds} s with ffmpeg ...")
        clips = [
            make_clip(scratch / f"frag{i}.mp4", seconds, tone=440 + 110 * i, faststart=True) for i in range(fragments)
        ]
        media = stack.enter_context(media_server(scratch))
        broker = os.environ.get("RECORDER_BROKER_URL") or stack.enter_context(redis_server())
        port = free_port()
        env = {
            **os.environ,
            "RECORDER_BROKER_URL": broker,
            "RECORDER_CALLBACK_KEYS": key,
            "RECORDER_API_TOKENS": token,
            "RECORDER_MEDIA_HOSTS": urlsplit(media).netloc,
            "RECORDER_SETTLE_SECONDS": "2",
            "RECORDER_SWEEP_SECONDS": "1",
        }
        logs = Path(env.get("RECORDER_WORK_DIR", "./data/work"))
        logs.mkdir(parents=True, exist_ok=True)
        cli = [sys.executable, "-m", "recorder.cli"]
        started = {
            name: (
                stack.enter_context(process([*cli, *args], env, logs / f"demo-{name}.log")),
                logs / f"demo-{name}.log",
            )
            for name, args in (("worker", ["worker", "--concurrency=2"]), ("serve", ["serve", "--port", str(port)]))
        }

        def running() -> None:
            """Stop waiting at once, with the reason, if a process we started has died."""
            for name, (proc, log) in started.items():
                if proc.poll() is not None:
                    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                    raise SystemExit(f"demo failed: recorder {name} exited ({proc.returncode}); {log}:\n{tail}")

        base = f"http://127.0.0.1:{port}"
        wait_for(
            lambda: running() or requests.get(f"{base}/healthz", timeout=1).raise_for_status(), what="recorder serve"
        )
        print(f"recorder serve on {base}, worker and redis-server running; logs in {logs}")

        first = time.time() - fragments * (seconds + GAP_SECONDS)
        bodies = [
            signed_record_callback(
                key=key,
                stream_id=stream_id,
                file_id=f"{stream_id}-{i}",
                url=f"{media}/{clip.name}",
                start=first + i * (seconds + GAP_SECONDS),
                seconds=seconds,
                size=clip.stat().st_size,
            )
            for i, clip in enumerate(clips)
        ]
        sends = bodies + [random.choice(bodies)]
        random.shuffle(sends)
        for body in sends:
            answer = requests.post(f"{base}/v1/callbacks/tencent", json=body, timeout=10)
            if answer.status_code != 200:
                print(f"callback refused: {answer.status_code} {answer.text}", file=sys.stderr)
                return 1
        print(f"sent {len(sends)} signed callbacks (shuffled, one duplicated) for stream {stream_id}")

        headers = {"Authorization": f"Bearer {token}"}

        def archived() -> dict[str, Any]:
            running()
            items = requests.get(
                f"{base}/v1/broadcasts", params={"stream_id": stream_id}, headers=headers, timeout=5
            ).json()["items"]
            if items and items[0]["status"] == "failed":
                raise SystemExit(f"demo failed: the broadcast failed: {items[0]['error']}")
            if not items or items[0]["status"] != "archived":
                raise RuntimeError("not yet")
            return items[0]

        broadcast = wait_for(archived, what="the archive", timeout=180)
        archive = broadcast["archive"]
        url = urlsplit(archive["url"])
        location = unquote(url.path) if url.scheme == "file" else archive["url"]
        gap_total = sum(g["seconds"] for g in broadcast["gaps"])
        print()
        print(f"archive:   {location}")
        print(f"broadcast: {broadcast['id']} v{broadcast['version']} ({broadcast['status']})")
        print(
            f"fragments: {len(broadcast['fragments'])}, gaps: {len(broadcast['gaps'])} ({gap_total:.1f} s, not padded)"
        )
        print(f"duration:  {archive['duration']:.2f} s (fragments: {fragments * seconds} s)")
        print(f"size:      {archive['size']} bytes, sha256 {archive['sha256'][:16]}...")
        print(f"took:      {time.monotonic() - began:.1f} s")
    return 0
