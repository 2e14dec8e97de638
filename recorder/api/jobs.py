"""Batch jobs: submit (idempotent by inputs), follow progress."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, request

from recorder import jobs
from recorder.api.auth import require_token
from recorder.api.params import after_arg, page
from recorder.app import services
from recorder.errors import NotFound
from recorder.queue import RUN_JOB
from recorder.store.db import transaction
from recorder.store.models import Job

bp = Blueprint("jobs", __name__)

JOB_BODY_LIMIT = 16 * 1024 * 1024  # imports carry their fragment list inline


@bp.post("/v1/jobs")
@require_token(admin=True)
def submit_job() -> tuple[dict[str, Any], int]:
    request.max_content_length = JOB_BODY_LIMIT
    spec = jobs.parse_spec(request.get_json(silent=True))
    svc = services()
    with transaction(svc.sessions) as session:
        submitted = jobs.submit(session, spec, window=svc.settings.reconnect_window, now=time.time())
        view = jobs.job_view(session, submitted.job)
    if submitted.created and not spec.dry_run:
        svc.publisher.send(RUN_JOB, view["id"])
    return view, 202 if submitted.created else 200


@bp.get("/v1/jobs/<job_id>")
@require_token()
def show_job(job_id: str) -> dict[str, Any]:
    with services().sessions() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return jobs.job_view(session, job)


@bp.get("/v1/jobs")
@require_token()
def list_jobs() -> dict[str, Any]:
    with services().sessions() as session:
        rows, cursor = page(session, jobs.jobs_query(after=after_arg()), lambda j: (j.created_at, j.id))
        return {"items": [jobs.job_view(session, job) for job in rows], "next_cursor": cursor}
