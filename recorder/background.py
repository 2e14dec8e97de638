"""A daemon thread per process, started on first use: web servers fork after building the app,
and threads do not survive a fork, so each child starts its own."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from queue import SimpleQueue
from typing import TypeVar

T = TypeVar("T")


class Background:
    def __init__(self, target: Callable[[], None], name: str) -> None:
        self.target = target
        self.name = name
        self._started_in: int | None = None  # the pid that started the thread
        self._lock = threading.Lock()

    def ensure_running(self) -> None:
        if self._started_in == os.getpid():
            return
        with self._lock:
            if self._started_in != os.getpid():
                threading.Thread(target=self.target, name=self.name, daemon=True).start()
                self._started_in = os.getpid()


def next_batch(queue: SimpleQueue[T], limit: int, *, linger: float = 0.0) -> list[T]:
    """Wait for an item, give others ``linger`` seconds to pile up, then take up to ``limit`` of them."""
    items = [queue.get()]
    if linger:
        time.sleep(linger)
    while len(items) < limit and not queue.empty():
        items.append(queue.get_nowait())
    return items
