"""`recorder serve` and `recorder worker` as real processes, for end-to-end tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import requests

from recorder.demo import free_port, process, wait_for
from tests.factories import ADMIN, KEY

CLI = [sys.executable, "-m", "recorder.cli"]


def service_env(tmp_path: Path, *, broker_url: str, **overrides: str) -> dict[str, str]:
    """A service on SQLite in ``tmp_path`` that settles within seconds; ``overrides`` are RECORDER_* names."""
    return {
        **os.environ,
        "RECORDER_DATABASE_URL": f"sqlite:///{tmp_path / 'recorder.db'}",
        "RECORDER_BROKER_URL": broker_url,
        "RECORDER_STORAGE_URL": f"file://{tmp_path / 'archive'}",
        "RECORDER_CALLBACK_KEYS": KEY,
        "RECORDER_API_TOKENS": ADMIN,
        "RECORDER_WORK_DIR": str(tmp_path / "work"),
        "RECORDER_SETTLE_SECONDS": "2",
        "RECORDER_SWEEP_SECONDS": "1",
        **{f"RECORDER_{name.upper()}": value for name, value in overrides.items()},
    }


@contextmanager
def serve_and_work(tmp_path: Path, env: dict[str, str], *, workers: int = 1) -> Iterator[str]:
    """Start serve and ``workers`` workers (the first runs the sweep); yields the base URL.

    The logs' tails are printed on the way out, which pytest shows when a test fails.
    """
    port = free_port()
    logs = [tmp_path / "serve.log", *(tmp_path / f"worker{n}.log" for n in range(workers))]
    with ExitStack() as stack:
        stack.enter_context(process([*CLI, "serve", "--port", str(port)], env, logs[0]))
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: requests.get(f"{base}/healthz", timeout=1).raise_for_status(), what="recorder serve")
        for n in range(workers):
            beat = "--beat" if n == 0 else "--no-beat"
            worker_env = {**env, "RECORDER_WORK_DIR": f"{env['RECORDER_WORK_DIR']}/{n}"}
            stack.enter_context(process([*CLI, "worker", "--concurrency=2", beat], worker_env, logs[n + 1]))
        for log in logs[1:]:  # consuming: what a test sends is handled at once, as in production
            wait_for(lambda log=log: " ready." in log.read_text() or 1 / 0, what=f"the worker ({log.name})")
        yield base
    for log in logs:
        print(f"--- {log.name}\n{log.read_text()[-4000:]}")
