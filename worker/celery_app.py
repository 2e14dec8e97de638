"""The Celery app, built from the same settings as the web side.

``celery -A worker worker -B`` works as well as ``recorder worker``.
"""

from __future__ import annotations

from celery import Celery

from recorder.config import Settings
from recorder.queue import SWEEP, celery_config


def make_celery(settings: Settings) -> Celery:
    celery = Celery("recorder", include=["worker.tasks"])
    celery.conf.update(celery_config(settings))
    celery.conf.beat_schedule = {
        "sweep": {"task": SWEEP, "schedule": settings.sweep_seconds, "options": {"expires": settings.sweep_seconds}},
    }
    return celery


app = make_celery(Settings())
