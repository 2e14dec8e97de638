"""A deadline on receiving request bodies, so slow-drip clients cannot hold server threads.

gunicorn's threads block while they read a body, and a client that sends one
byte a second keeps one busy for hours. This WSGI middleware gives every body a
deadline; a watchdog shuts down the socket of a request still receiving its
body after it, which ends the blocked read at once. Without gunicorn (no
``gunicorn.socket`` in the environ) it does nothing.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _WatchedInput:
    """wsgi.input that stops the watch once the whole body has been read."""

    def __init__(self, stream: Any, length: int | None, done: Callable[[], None]) -> None:
        self._stream, self._left, self._done = stream, length, done

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size) if size is not None and size >= 0 else self._stream.read()
        if self._left is not None:
            self._left -= len(data)
        if not data or (self._left is not None and self._left <= 0):
            self._done()
        return data  # type: ignore[no-any-return]

    def readline(self, size: int = -1) -> bytes:
        data = self._stream.readline(size)
        if not data:
            self._done()
        return data  # type: ignore[no-any-return]

    def __iter__(self) -> Any:
        return iter(self.readline, b"")


class BodyDeadline:
    def __init__(self, app: WSGIApp, seconds: float) -> None:
        self.app, self.seconds = app, seconds
        self._watched: dict[int, tuple[float, socket.socket]] = {}
        self._lock = threading.Lock()
        self._watchdog: threading.Thread | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        sock = environ.get("gunicorn.socket")
        length = environ.get("CONTENT_LENGTH")
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if sock is None or not (chunked or (length and length != "0")):
            return self.app(environ, start_response)
        key = id(sock)
        done = lambda: self._unwatch(key)  # noqa: E731
        self._watch(key, sock)
        environ["wsgi.input"] = _WatchedInput(environ["wsgi.input"], None if chunked else int(length), done)
        try:
            return self.app(environ, start_response)
        finally:
            done()  # the body is no longer being read, whatever the view did

    def _watch(self, key: int, sock: socket.socket) -> None:
        with self._lock:
            self._watched[key] = (time.monotonic() + self.seconds, sock)
            if self._watchdog is None or not self._watchdog.is_alive():  # one per (forked) process
                self._watchdog = threading.Thread(target=self._patrol, name="body-deadline", daemon=True)
                self._watchdog.start()

    def _unwatch(self, key: int) -> None:
        with self._lock:
            self._watched.pop(key, None)

    def _patrol(self) -> None:
        while True:
            time.sleep(min(0.5, self.seconds / 4))
            now = time.monotonic()
            with self._lock:
                late = [(key, sock) for key, (deadline, sock) in self._watched.items() if deadline < now]
                for key, _ in late:
                    del self._watched[key]
            for _, sock in late:
                log.warning("request body not received within %.0f s: closing the connection", self.seconds)
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
