"""Thin tasks: translate a message into a pipeline call. All state is in the database."""

from __future__ import annotations

import logging
from functools import cache

from celery import group
from celery.signals import worker_process_init

from recorder import pipeline
from recorder.config import Settings
from recorder.queue import HANDLE_EVENT, RUN_JOB, STITCH, SWEEP
from worker.celery_app import app

log = logging.getLogger(__name__)


@cache
def context() -> pipeline.Context:
    return pipeline.Context.build(Settings())


@worker_process_init.connect
def _clear_scratch(**_: object) -> None:
    """A pool process replacing a killed one removes the scratch files the killed one left."""
    pipeline.clear_scratch(Settings().work_dir)


@app.task(name=HANDLE_EVENT)
def handle_event(*event_ids: int) -> int:
    """Handle events published together; one that fails stays unhandled for the sweep to resend."""
    handled = 0
    for event_id in event_ids:
        try:
            handled += pipeline.handle_event(context(), event_id)
        except Exception:
            log.exception("event %s not handled (the sweep sends it again)", event_id)
    return handled


@app.task(name=STITCH)
def stitch(broadcast_id: str) -> str:
    return pipeline.stitch_broadcast(context(), broadcast_id)


@app.task(name=RUN_JOB)
def run_job(job_id: str) -> int:
    broadcast_ids = pipeline.run_job(context(), job_id)
    group(stitch.s(b) for b in broadcast_ids).apply_async()
    return len(broadcast_ids)


@app.task(name=SWEEP)
def sweep() -> dict[str, int]:
    work = pipeline.sweep(context())
    if work.events:
        handle_event.delay(*work.events)
    for broadcast_id in work.stitches:
        stitch.delay(broadcast_id)
    queued = pipeline.queued_jobs(context())
    for job_id in queued:
        run_job.delay(job_id)
    return {"events": len(work.events), "stitches": len(work.stitches), "jobs": len(queued)}
