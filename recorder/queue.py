"""Publishing work to Celery by task name, so the web side never imports the worker.

The database is the source of truth: a publish that fails is only logged, and the
periodic sweep sends the work again once the broker is back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any

from celery import Celery

from recorder.background import Background, next_batch
from recorder.config import Settings

log = logging.getLogger(__name__)

HANDLE_EVENT = "recorder.handle_event"
STITCH = "recorder.stitch"
PREFETCH = "recorder.prefetch"
SWEEP = "recorder.sweep"
RUN_JOB = "recorder.run_job"

EVENTS_QUEUE = "events"
MEDIA_QUEUE = "media"
PREFETCH_QUEUE = "prefetch"  # its own queue: a burst of prefetches takes turns with due stitches, not the lead
DROP_PREFETCHED = "drop_prefetched"  # a command to every worker, not a task


def visibility_timeout(settings: Settings, *, time_limit: float = 0) -> int:
    """Redis redelivers a message not acked within this many seconds, so it must exceed the
    longest task: twice the time limit, with a margin."""
    return int(max(2 * settings.ffmpeg_timeout, 2 * settings.lease_seconds, 2 * time_limit + 120, 3600)) + 600


def default_time_limit(settings: Settings) -> int:
    """The worker's hard time limit unless ``--time-limit`` gives one: well inside the visibility timeout."""
    return visibility_timeout(settings) // 2 - 60


def celery_config(settings: Settings) -> dict[str, Any]:
    """Settings shared by the publisher and the worker (the worker sets its time limit itself)."""
    visibility = visibility_timeout(settings)
    return {
        "broker_url": settings.broker_url,
        "broker_connection_timeout": 2,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": visibility,
            "socket_connect_timeout": 2,
            "socket_timeout": 5,
        },
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": EVENTS_QUEUE,
        "task_routes": {STITCH: {"queue": MEDIA_QUEUE}, PREFETCH: {"queue": PREFETCH_QUEUE}},
        "task_serializer": "json",
        "accept_content": ["json"],
    }


class Publisher:
    """Sends tasks by name. After a failure it stops trying for ``pause`` seconds, so
    callbacks are answered at full speed while the broker is down."""

    def __init__(self, settings: Settings, *, pause: float = 5.0, batch: int = 500, linger: float = 0.02) -> None:
        self.celery = Celery("recorder-publisher")
        self.celery.conf.update(celery_config(settings))
        self.pause = pause
        self.batch = batch
        self.linger = linger
        self._down_until = 0.0
        self._events: SimpleQueue[int] = SimpleQueue()
        self._sender = Background(self._send_events, name="event-publisher")

    def send(self, task: str, *args: Any) -> bool:
        """Publish without blocking the caller for long; False when the broker is down."""
        return self._try(f"publish {task}{args!r}", lambda: self.celery.send_task(task, args=args, retry=False))

    def tell_workers(self, command: str, **arguments: Any) -> bool:
        """Send a command to every worker listening now (Celery's remote control), unanswered."""
        broadcast = self.celery.control.broadcast
        return self._try(f"tell the workers {command}", lambda: broadcast(command, arguments=arguments))

    def _try(self, what: str, publish: Callable[[], object]) -> bool:
        if time.monotonic() < self._down_until:
            return False
        try:
            publish()
        except Exception as error:  # broker down: the sweep sends tasks again; copies not dropped age out
            self._down_until = time.monotonic() + self.pause
            log.warning("could not %s (not trying for %.0f s): %s", what, self.pause, error)
            return False
        return True

    def handle_later(self, event_id: int) -> None:
        """Hand a stored event to the background sender and return at once.

        A publish costs ~1 ms of CPU, more than storing the callback; the sender waits
        ``linger`` seconds after an event arrives and publishes whatever has piled up by then
        as one message, so under load the cost per callback shrinks instead of growing. An
        event whose publish never happens (process killed, broker down) is still stored, and
        the sweep delivers it.
        """
        self._sender.ensure_running()
        self._events.put(event_id)

    def _send_events(self) -> None:
        while True:
            self.send(HANDLE_EVENT, *next_batch(self._events, self.batch, linger=self.linger))
