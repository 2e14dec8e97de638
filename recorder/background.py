"""A daemon thread per process, started on first use: web servers fork after building the app,
and threads do not survive a fork, so each child starts its own."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable


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
