"""Batch jobs: re-stitch the broadcasts of a time range, or import a fragment list.

A job's id is derived from its inputs, so the same request twice is one job and
stitches once. A dry run only proposes: the broadcasts that would be formed,
their gaps and expected durations, computed with the same pure grouping.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator, model_validator
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from recorder.errors import BadRequest, first_problem
from recorder.events import FragmentInfo, Text
from recorder.grouping import Window, gaps, group_fragments, timeline
from recorder.imports import normalized, parse_fragments, zone_offset
from recorder.present import gap_json
from recorder.store import repository
from recorder.store.models import Archive, Broadcast, Fragment, Job, JobBroadcast
from recorder.timeutil import iso, parse_time

MAX_STREAM_IDS = 1000


class StitchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(pattern="^stitch$")
    stream_ids: list[Annotated[Text, Field(min_length=1, max_length=1024)]] | None = Field(
        None, min_length=1, max_length=MAX_STREAM_IDS
    )
    stream_prefix: Text | None = Field(None, min_length=1, max_length=1024)
    since: float
    until: float
    dry_run: StrictBool = False

    @field_validator("since", "until", mode="before")
    @classmethod
    def _time(cls, value: object) -> float:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError("expected ISO 8601 or UNIX seconds")
        return parse_time(value)

    @field_validator("stream_ids")
    @classmethod
    def _as_a_set(cls, value: list[str] | None) -> list[str] | None:
        return sorted(set(value)) if value is not None else None  # order and repeats must not change the job id

    @model_validator(mode="after")
    def _one_selector(self) -> StitchSpec:
        if (self.stream_ids is None) == (self.stream_prefix is None):
            raise ValueError("give exactly one of stream_ids and stream_prefix")
        if self.until <= self.since:
            raise ValueError("until must be after since")
        return self


class ImportSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(pattern="^import$")
    format: str = Field(pattern="^(jsonl|csv)$")
    data: str = Field(min_length=1)
    timezone: str = "+08:00"  # of the VOD console's file names
    dry_run: StrictBool = False

    # The job id hashes these fields: one list sent or saved another way is still one job.
    @field_validator("data")
    @classmethod
    def _one_text(cls, data: str) -> str:
        return normalized(data)

    @field_validator("timezone")
    @classmethod
    def _one_offset(cls, offset: str) -> str:
        return zone_offset(offset)

    @model_validator(mode="after")
    def _zone_only_for_csv(self) -> ImportSpec:
        if self.format == "jsonl":  # callback bodies carry their own times
            self.timezone = ImportSpec.model_fields["timezone"].default
        return self


Spec = StitchSpec | ImportSpec


def parse_spec(body: object) -> Spec:
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    kind = body.get("kind")
    model = {"stitch": StitchSpec, "import": ImportSpec}.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise BadRequest("kind: expected 'stitch' or 'import'")
    try:
        spec = model.model_validate(body)
    except ValidationError as error:
        raise BadRequest(first_problem(error, "body")) from None
    if isinstance(spec, ImportSpec):
        parse_fragments(spec.data, spec.format, tz_offset=spec.timezone)  # a bad import is refused now, not later
    return spec


def job_id(spec: Spec) -> str:
    canonical = json.dumps(spec.model_dump(), sort_keys=True, separators=(",", ":"))
    return "j" + hashlib.sha256(canonical.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Submitted:
    job: Job
    created: bool


def submit(session: Session, spec: Spec, *, window: float, now: float) -> Submitted:
    """Create the job once; a dry run is answered at once with its proposal."""
    existing = session.get(Job, job_id(spec))
    if existing is not None:
        return Submitted(existing, created=False)
    job = Job(
        id=job_id(spec),
        kind=spec.kind,
        dry_run=spec.dry_run,
        params=spec.model_dump_json(),
        status="queued",
        created_at=now,
        updated_at=now,
    )
    if spec.dry_run:
        job.proposal = json.dumps(propose(session, spec, window=window))
        job.status = "done"
    try:
        with session.begin_nested():  # the same submission at the same moment (a client's retry) inserts too
            session.add(job)
    except IntegrityError:
        return Submitted(session.get_one(Job, job.id), created=False)
    return Submitted(job, created=True)


def _spec_of(job: Job) -> Spec:
    return (StitchSpec if job.kind == "stitch" else ImportSpec).model_validate_json(job.params)


def _selected(spec: StitchSpec) -> Any:
    if spec.stream_ids is not None:
        return Fragment.stream_id.in_(spec.stream_ids)
    return repository.like_prefix(Fragment.stream_id, spec.stream_prefix)  # type: ignore[arg-type]


def _fragments_for(session: Session, spec: Spec, *, window: float) -> tuple[list[Any], set[str]]:
    """The fragments a job covers, and which of them are new (imported, not yet stored)."""
    if isinstance(spec, StitchSpec):
        query = select(Fragment).where(_selected(spec), Fragment.end >= spec.since, Fragment.start <= spec.until)
        return list(session.execute(query).scalars()), set()
    imported = parse_fragments(spec.data, spec.format, tz_offset=spec.timezone)
    streams = {f.stream_id for f in imported}
    start, end = min(f.start for f in imported) - window, max(f.end for f in imported) + window
    stored = session.execute(
        select(Fragment).where(Fragment.stream_id.in_(streams), Fragment.end >= start, Fragment.start <= end)
    ).scalars()
    known = {f.source_key: f for f in stored}
    new = {f.source_key for f in imported} - known.keys()
    return [*known.values(), *(f for f in imported if f.source_key in new)], new


def propose(session: Session, spec: Spec, *, window: float) -> list[dict[str, Any]]:
    """The broadcasts the job would form: fragments, gaps, expected duration."""
    fragments, new = _fragments_for(session, spec, window=window)
    # The windows declared for these streams hold their fragments, as they do when grouping.
    declared = (
        select(Broadcast)
        .where(Broadcast.declared.is_(True), Broadcast.stream_id.in_({f.stream_id for f in fragments}))
        .order_by(Broadcast.id)  # of equal spans, the window _declared_window would pick
    )
    windows = [
        Window(b.stream_id, b.started_at, b.ended_at, b.app, b.appname, b.window_format or "")
        for b in session.execute(declared).scalars()
    ]
    groups = group_fragments(fragments, window, key=lambda f: (f.app, f.appname, f.stream_id), windows=windows)
    return [
        {
            "app": group[0].app,
            "appname": group[0].appname,
            "stream_id": group[0].stream_id,
            "formats": sorted({str(f.format) for f in group}),
            "started_at": iso(min(f.start for f in group)),
            "ended_at": iso(max(f.end for f in group)),
            "fragments": [
                {
                    "source_key": f.source_key,
                    "start": iso(f.start),
                    "end": iso(f.end),
                    "url": f.url,
                    "new": f.source_key in new,
                }
                for f in group
            ],
            "gaps": [gap_json(g) for g in gaps(group)],
            "expected_duration": round(sum(f.end - f.start - p.trim for p in timeline(group) for f in [p.fragment]), 3),
        }
        for group in groups
    ]


def start(session: Session, job_id: str, *, window: float, now: float) -> list[str]:
    """Run a queued job once: store imports, then ask for a stitch of each broadcast it covers."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or job.status != "queued" or job.dry_run:
        return []
    spec = _spec_of(job)
    fragments, new = _fragments_for(session, spec, window=window)
    imported = [f for f in fragments if isinstance(f, FragmentInfo) and f.source_key in new]
    # In the order declare_window locks streams: no two transactions wait for each other's.
    for info in sorted(imported, key=lambda f: (f.stream_id, f.app, f.appname, f.start, f.source_key)):
        _store_imported(session, info, window=window, now=now)
    keys = [f.source_key for f in fragments]
    broadcast_ids = sorted(
        set(
            session.execute(
                select(Fragment.broadcast_id).where(Fragment.source_key.in_(keys), Fragment.broadcast_id.is_not(None))
            ).scalars()
        )
    )
    for broadcast_id in broadcast_ids:
        broadcast = session.get_one(Broadcast, broadcast_id)
        session.add(JobBroadcast(job_id=job.id, broadcast_id=broadcast_id, base_version=broadcast.version))
        repository.request_stitch(session, broadcast, now=now)
    job.status, job.updated_at = "running", now
    return broadcast_ids


def _store_imported(session: Session, info: FragmentInfo, *, window: float, now: float) -> None:
    body = json.dumps({"source_key": info.source_key, "url": info.url, "stream_id": info.stream_id})
    event_id = repository.store_callback(
        session,
        repository.NewCallback(
            provider="import",
            event_type="100",
            dedupe_key=hashlib.sha256(f"import:{info.source_key}".encode()).hexdigest(),
            body=body,
            fragment=info,
            received_at=now,
        ),
    )
    if event_id is not None:
        event = repository.unhandled_event(session, event_id)
        repository.handle_event(session, event, info, window=window, now=now)  # type: ignore[arg-type]


def fail(session: Session, job_id: str, reason: str, *, now: float) -> None:
    job = session.get_one(Job, job_id)
    job.status, job.error, job.updated_at = "failed", reason, now


def queued_jobs(session: Session, *, before: float) -> list[str]:
    query = select(Job.id).where(Job.status == "queued", Job.created_at <= before).order_by(Job.created_at).limit(100)
    return list(session.execute(query).scalars())


def job_view(session: Session, job: Job) -> dict[str, Any]:
    """The job as the API shows it, with progress counted in broadcasts."""
    rows = session.execute(
        select(Broadcast, JobBroadcast.base_version)
        .join(JobBroadcast, JobBroadcast.broadcast_id == Broadcast.id)
        .where(JobBroadcast.job_id == job.id)
        .order_by(Broadcast.started_at, Broadcast.id)
    ).all()
    broadcasts, done, failed, size = [], 0, 0, 0
    for broadcast, base_version in rows:
        if broadcast.status == "merged" and broadcast.merged_into:
            broadcast = session.get_one(Broadcast, broadcast.merged_into)
        finished = broadcast.version > base_version and broadcast.status in ("archived", "suspect")
        done += finished
        failed += broadcast.status == "failed"
        if finished:
            size += int(
                session.execute(
                    select(func.coalesce(func.sum(Archive.size), 0)).where(
                        Archive.broadcast_id == broadcast.id, Archive.version == broadcast.version
                    )
                ).scalar_one()
            )  # PostgreSQL sums bigint as numeric
        broadcasts.append(
            {
                "id": broadcast.id,
                "stream_id": broadcast.stream_id,
                "status": broadcast.status,
                "version": broadcast.version,
                "started_at": iso(broadcast.started_at),
                "ended_at": iso(broadcast.ended_at),
                "error": broadcast.error,
            }
        )
    status = job.status
    if status == "running" and done + failed == len(rows):
        status = "done"
    proposal = json.loads(job.proposal) if job.dry_run and job.proposal else None
    total = len(proposal) if proposal is not None else len(rows)
    return {
        "id": job.id,
        "kind": job.kind,
        "status": status,
        "dry_run": job.dry_run,
        "progress": {"total": total, "done": done, "failed": failed, "bytes": size},
        "broadcasts": proposal if proposal is not None else broadcasts,
        "error": job.error,
        "created_at": iso(job.created_at),
    }


def jobs_query(*, after: tuple[float, str] | None = None) -> Any:
    query = select(Job)
    if after is not None:
        created, last_id = after
        query = query.where(or_(Job.created_at < created, (Job.created_at == created) & (Job.id < last_id)))
    return query.order_by(Job.created_at.desc(), Job.id.desc())
