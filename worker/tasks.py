"""Thin tasks: translate a message into a pipeline call. All state is in the database."""

from __future__ import annotations

import gc
import logging
import time
from functools import cache

from celery import group
from celery.signals import worker_init, worker_process_init
from celery.worker.control import control_command

from recorder import pipeline, prefetched
from recorder.config import Settings
from recorder.queue import DROP_PREFETCHED, HANDLE_EVENT, PREFETCH, RUN_JOB, STITCH, SWEEP
from worker.celery_app import app
from worker.memory import hand_back_freed_memory

log = logging.getLogger(__name__)


@cache
def context() -> pipeline.Context:
    return pipeline.Context.build(Settings())


@worker_init.connect
def _tune_the_heap(**_: object) -> None:
    hand_back_freed_memory()  # in the main process, so the pool it forks inherits it


@worker_init.connect
def _build_before_forking(**_: object) -> None:
    """Build the context in the main process, so the pool processes it forks share its pages
    (~1,000 modules, the S3 client's service model, the migration) instead of each building
    its own: ~45 MB less per pool process."""
    try:
        context().engine.dispose()  # no connection crosses the fork: each process opens its own
    except Exception as error:  # e.g. the database not up yet: each pool process builds it later
        context.cache_clear()
        log.warning("context not built before forking the pool (%s); each process builds its own", error)
        return
    gc.freeze()  # what exists now stays shared: the collector no longer writes to those pages


@worker_process_init.connect
def _clear_scratch(**_: object) -> None:
    """A pool process replacing a killed one removes the scratch files the killed one left, and
    day-old prefetched copies (of broadcasts stitched elsewhere whose drop never reached us)."""
    work_dir = Settings().work_dir
    pipeline.clear_scratch(work_dir)
    prefetched.drop_stale(work_dir)


@app.task(name=HANDLE_EVENT)
def handle_event(*event_ids: int) -> int:
    """Handle events published together; one that fails stays unhandled for the sweep to resend."""
    handled = []
    for event_id in event_ids:
        try:
            if pipeline.handle_event(context(), event_id):
                handled.append(event_id)
        except Exception:
            log.exception("event %s not handled (the sweep sends it again)", event_id)
    if handled:
        _prefetch_fragments(handled)
        _sweep_when_settled(context().settings.settle_seconds)
    return len(handled)


def _prefetch_fragments(event_ids: list[int]) -> None:
    """Fetch the new fragments while their broadcasts wait to settle (best effort)."""
    try:
        for fragment_id in pipeline.fragments_to_prefetch(context(), event_ids):
            prefetch.apply_async((fragment_id,), retry=False)
    except Exception as error:  # the stitch fetches them
        log.warning("could not schedule prefetches: %s", error)


@app.task(name=PREFETCH)
def prefetch(fragment_id: int) -> str:
    return pipeline.prefetch(context(), fragment_id)


@control_command(name=DROP_PREFETCHED, args=[("fragment_ids", list)], signature="<fragment_ids>")
def drop_prefetched(state: object, fragment_ids: list[int]) -> dict[str, int]:
    """Drop this machine's copies of fragments whose broadcast another worker finished."""
    return {"dropped": prefetched.drop(Settings().work_dir, fragment_ids)}


SHORT_SETTLE = 60.0  # longer settles wait for the periodic sweep: its tick is small beside them
_sweep_due = 0.0  # when the last sweep this process scheduled will run (monotonic)


def _sweep_when_settled(settle: float) -> None:
    """Schedule a sweep for when what was just grouped has been quiet for ``settle`` seconds,
    so a short settle is not stretched by up to one sweep tick. Coalesced to 4 a second."""
    global _sweep_due
    due = time.monotonic() + settle
    if settle > SHORT_SETTLE or due - _sweep_due < 0.25:
        return
    try:
        sweep.apply_async(countdown=settle + 0.05, retry=False)
    except Exception as error:  # the periodic sweep is still there
        log.warning("could not schedule a sweep: %s", error)
        return
    _sweep_due = due


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
