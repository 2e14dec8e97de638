"""`recorder serve` under load it must survive: slow-drip and chunked bodies, a dead broker."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from recorder.demo import free_port, process, wait_for
from tests.factories import KEY, record_body

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One gunicorn worker with 8 threads, a 2 s body deadline, and a broker that is down."""
    tmp = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = {
        **os.environ,
        "RECORDER_DATABASE_URL": f"sqlite:///{tmp / 'recorder.db'}",
        "RECORDER_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
        "RECORDER_STORAGE_URL": f"file://{tmp / 'archive'}",
        "RECORDER_CALLBACK_KEYS": KEY,
        "RECORDER_WORK_DIR": str(tmp / "work"),
        "RECORDER_BODY_TIMEOUT": "2",
    }
    args = [sys.executable, "-m", "recorder.cli", "serve", "--port", str(port), "--workers", "1"]
    with process(args, env, tmp / "serve.log"):
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: requests.get(f"{base}/healthz", timeout=1).raise_for_status(), what="recorder serve")
        yield base


def drip(base: str, length: int) -> socket.socket:
    """Send a callback's headers, then only the first byte of its body."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    head = (
        f"POST /v1/callbacks/tencent HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n{{"
    )
    sock.sendall(head.encode())
    return sock


def test_slow_drip_bodies_are_cut_off_and_do_not_starve_others(server: str) -> None:
    drippers = [drip(server, 1000) for _ in range(12)]  # more than the server's 8 threads
    time.sleep(0.5)
    began = time.monotonic()
    answer = requests.post(f"{server}/v1/callbacks/tencent", json=record_body(file_id="after-drip"), timeout=15)
    assert answer.status_code == 200
    assert time.monotonic() - began < 7  # two rounds of the 2 s deadline at most, not the drip's hours
    for sock in drippers:
        sock.settimeout(5)
        try:
            sock.sendall(b'"a": 1')
            closed = sock.recv(4096)  # the server answered and/or closed
        except OSError:
            closed = b""
        assert b"200 OK" not in closed
        sock.close()


def test_chunked_body_cannot_pass_the_size_cap(server: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"event_type": 100, "padding": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    answer = requests.post(
        f"{server}/v1/callbacks/tencent", data=chunks(), headers={"Content-Type": "application/json"}, timeout=10
    )
    assert answer.status_code == 413 and answer.json()["code"] == 413


def test_callbacks_are_answered_fast_while_the_broker_is_down(server: str) -> None:
    began = time.monotonic()
    for n in range(20):
        answer = requests.post(f"{server}/v1/callbacks/tencent", json=record_body(file_id=f"down-{n}"), timeout=10)
        assert answer.status_code == 200
    assert time.monotonic() - began < 10


def test_logs_never_show_the_sign_keys_or_tokens(server: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    body = record_body(file_id="logged")
    requests.post(f"{server}/v1/callbacks/tencent", json=body, timeout=10)
    requests.post(f"{server}/v1/callbacks/tencent", json={**body, "sign": "0" * 32}, timeout=10)
    requests.post(f"{server}/v1/callbacks/srs?token=source-secret-token", json={}, timeout=10)
    time.sleep(0.5)  # the access log line is written after the answer
    logs = "".join(p.read_text() for p in Path(tmp_path_factory.getbasetemp()).glob("serve*/serve.log"))
    assert "/v1/callbacks/srs" in logs
    assert body["sign"] not in logs and KEY not in logs and "0" * 32 not in logs and "source-secret" not in logs
