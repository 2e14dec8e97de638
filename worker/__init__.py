"""The Celery side: thin tasks that call recorder.pipeline."""

from worker.celery_app import app

__all__ = ["app"]
