"""The Celery app, built from the same settings as the web side.

``celery -A worker worker --sweep`` works as well as ``recorder worker`` (and ``-B``, Celery's
own beat process, or a separate ``celery -A worker beat``, also schedule the sweep).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, bootsteps, signals
from click import Option

from recorder.config import Settings
from recorder.queue import SWEEP, celery_config, default_time_limit, visibility_timeout

log = logging.getLogger(__name__)


class SweepTimer(bootsteps.StartStopStep):
    """Publishes the sweep every ``sweep_seconds`` from the worker's own event loop.

    Celery's embedded beat would do the same from a process of its own, which holds a copy
    of the whole app (~45 MB); the worker's timer costs nothing. Enabled by ``--sweep``.
    """

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker: Any, sweep: bool = False, **_: Any) -> None:
        self.enabled = sweep
        self.timer_ref: Any = None

    def start(self, worker: Any) -> None:
        seconds = worker.app.conf.beat_schedule["sweep"]["schedule"]  # the period beat would use
        self.timer_ref = worker.timer.call_repeatedly(seconds, self.publish, (worker.app, seconds))

    @staticmethod
    def publish(app: Celery, seconds: float) -> None:
        try:  # never block the worker's event loop on a broker that is down: the next tick retries
            app.send_task(SWEEP, expires=seconds, retry=False)  # a sweep not run in time gives way to the next
        except Exception as error:
            log.warning("could not publish the sweep (next try in %.0f s): %s", seconds, error)

    def stop(self, worker: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None


def apply_time_limit(conf: Any, options: dict[str, Any], settings: Settings) -> None:
    """The hard time limit: ``--time-limit`` if given, else one derived from the settings; the
    visibility timeout grows to stay above it. Set when the worker starts, not in the shared
    config: a ``task_time_limit`` there binds to every task and overrides the command line."""
    limit = options.get("time_limit") or default_time_limit(settings)
    conf.task_time_limit = limit
    conf.broker_transport_options = {
        **conf.broker_transport_options,
        "visibility_timeout": visibility_timeout(settings, time_limit=limit),
    }


def make_celery(settings: Settings) -> Celery:
    celery = Celery("recorder", include=["worker.tasks"])
    celery.conf.update(celery_config(settings))
    celery.conf.beat_schedule = {
        "sweep": {"task": SWEEP, "schedule": settings.sweep_seconds, "options": {"expires": settings.sweep_seconds}},
    }
    celery.user_options["worker"].add(
        Option(["--sweep"], is_flag=True, default=False, help="Publish the sweep every RECORDER_SWEEP_SECONDS.")
    )
    celery.steps["worker"].add(SweepTimer)

    def on_worker_init(instance: Any, options: dict[str, Any], **_: Any) -> None:
        if instance.app is celery:
            apply_time_limit(celery.conf, options, settings)

    signals.celeryd_init.connect(on_worker_init, weak=False)
    return celery


app = make_celery(Settings())
