"""Batch jobs: submit (idempotent by inputs), follow progress."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from recorder import actions, queries
from recorder.api.auth import require_token
from recorder.api.openapi import TOKEN, JobList, JobOut, JobRequest, Response, documented, errors
from recorder.api.params import query_args, request_json
from recorder.app import services
from recorder.queries import PageQuery

bp = Blueprint("jobs", __name__)

JOB_BODY_LIMIT = 16 * 1024 * 1024  # imports carry their fragment list inline


@bp.post("/v1/jobs")
@documented(
    json=JobRequest,
    resp=Response(HTTP_200=JobOut, HTTP_202=JobOut, **errors(400, 401, 403, 413)),
    security=TOKEN,
    tags=["jobs"],
)
@require_token(admin=True)
def submit_job() -> tuple[dict[str, Any], int]:
    request.max_content_length = JOB_BODY_LIMIT
    view, created = actions.submit_job(services(), request_json())
    return view, 202 if created else 200


@bp.get("/v1/jobs/<job_id>")
@documented(resp=Response(HTTP_200=JobOut, **errors(401, 404)), security=TOKEN, tags=["jobs"])
@require_token()
def show_job(job_id: str) -> dict[str, Any]:
    return queries.show_job(services(), job_id)


@bp.get("/v1/jobs")
@documented(query=PageQuery, resp=Response(HTTP_200=JobList, **errors(400, 401)), security=TOKEN, tags=["jobs"])
@require_token()
def list_jobs() -> dict[str, Any]:
    return queries.list_jobs(services(), query_args(PageQuery))
