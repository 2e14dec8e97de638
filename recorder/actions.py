"""Operator actions, shared by the API and the web pages: stitch now, declare a window, submit a job.

Each runs in its own transaction and publishes only after the commit.
"""

from __future__ import annotations

import time
from typing import Any

from recorder import jobs
from recorder.api.openapi import DeclareWindow
from recorder.errors import BadRequest
from recorder.queries import get_broadcast
from recorder.queue import RUN_JOB, STITCH
from recorder.services import Services
from recorder.store import repository
from recorder.store.db import transaction


def stitch_now(svc: Services, broadcast_id: str) -> None:
    """Finalize now, or re-stitch: the next archive is a new version."""
    with transaction(svc.sessions) as session:
        broadcast = get_broadcast(session, broadcast_id)
        if broadcast.status == "merged":
            raise BadRequest(f"broadcast {broadcast_id} was merged into {broadcast.merged_into}; stitch that one")
        repository.request_stitch(session, broadcast, now=time.time())
    svc.publisher.send(STITCH, broadcast_id)


def declare(svc: Services, window: DeclareWindow) -> str:
    """Declare a window the app knows (a class from 9:00 to 9:45); returns the new broadcast's id."""
    with transaction(svc.sessions) as session:
        broadcast = repository.declare_window(
            session,
            stream_id=window.stream_id,
            start=window.start,
            end=window.end,
            app=window.app,
            appname=window.appname,
            format=window.format,
            window=svc.settings.reconnect_window,
            now=time.time(),
        )
        return broadcast.id


def submit_job(svc: Services, body: object) -> tuple[dict[str, Any], bool]:
    """The job as the API shows it, and whether this submission created it (the same inputs are one job)."""
    spec = jobs.parse_spec(body)
    with transaction(svc.sessions) as session:
        submitted = jobs.submit(session, spec, window=svc.settings.reconnect_window, now=time.time())
        view = jobs.job_view(session, submitted.job)
    if submitted.created and not spec.dry_run:
        svc.publisher.send(RUN_JOB, view["id"])
    return view, submitted.created
