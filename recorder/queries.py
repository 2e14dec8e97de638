"""What operators ask: broadcasts, fragments and jobs, filtered and paged.

The query models are also the OpenAPI document's parameters, so what is
documented is what is validated: unknown or malformed parameters are refused.
Shared by the API, the web pages and the CLI; nothing here needs Flask.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema
from sqlalchemy import Select
from sqlalchemy.orm import Session, selectinload

from recorder import jobs
from recorder.errors import BadRequest, NotFound, first_problem
from recorder.events import MediaFormat, Text
from recorder.present import broadcast_json, fragment_json
from recorder.services import Services
from recorder.store import repository
from recorder.store.models import Broadcast, Job
from recorder.timeutil import LATEST, parse_time

MAX_LIMIT = 500
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
JSON = dict[str, Any]
Status = Literal["open", "settling", "stitching", "archived", "suspect", "failed"]  # "merged" is never listed
MAX_ID = 64  # longer than any id this service makes

TIME = r"^(\d{1,12}(\.\d+)?|\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)$"


def _time(value: object) -> float | None:
    if value is None:
        return None
    try:
        return parse_time(value)  # type: ignore[arg-type]  # it refuses the rest, booleans too
    except ValueError as error:
        raise ValueError(f"expected ISO 8601 or UNIX seconds from 1970 to 2999 ({error})") from None


_TIME_DOC = "ISO 8601 (UTC if no zone) or UNIX seconds"
Time = Annotated[
    float | None, BeforeValidator(_time), WithJsonSchema({"type": "string", "pattern": TIME, "description": _TIME_DOC})
]
RequiredTime = Annotated[
    float, BeforeValidator(_time), WithJsonSchema({"type": ["string", "number"], "description": _TIME_DOC})
]


class PageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(50, ge=1, le=MAX_LIMIT)
    cursor: str | None = Field(None, description="opaque: the next_cursor of the previous page")

    def after(self, id_type: type[str] | type[int]) -> tuple[float, Any] | None:
        """The position the cursor points after: (sort value, id), the id a ``id_type``."""
        if not self.cursor:
            return None
        try:
            values = json.loads(base64.urlsafe_b64decode(self.cursor.encode()))
        except (ValueError, RecursionError):
            values = None
        # Checked before it reaches SQL: a cursor is the client's to tamper with.
        match values:
            case [float() | int() as position, str() | int() as last] if (
                not isinstance(position, bool)
                and 0 <= position < LATEST
                and type(last) is id_type
                and (len(last) <= MAX_ID if isinstance(last, str) else 0 <= last < 2**63)
            ):
                return float(position), last
        raise BadRequest("cursor is not one this API returned")


class FragmentQuery(PageQuery):
    stream_id: Text | None = None
    since: Time = None
    until: Time = None


class BroadcastQuery(FragmentQuery):
    stream_prefix: Text | None = None
    app: Text | None = None
    appname: Text | None = None
    format: MediaFormat | Literal[""] | None = None  # "": a blank form field
    status: Status | Literal[""] | None = None


def validated(model: type[M], data: object, where: str) -> M:
    """``data`` as ``model``, or BadRequest naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise BadRequest(first_problem(error, where)) from None


def parse_query(model: type[M], args: Mapping[str, Any]) -> M:
    return validated(model, {k: v for k, v in args.items() if v is not None}, "query")


def page(
    session: Session, query: Select[tuple[T]], args: PageQuery, position: Callable[[T], Sequence[Any]]
) -> tuple[list[T], str | None]:
    """One page of ``query`` (already ordered) and the cursor to the next one."""
    rows = list(session.execute(query.limit(args.limit + 1)).scalars())
    if len(rows) <= args.limit:
        return rows, None
    cursor = json.dumps(list(position(rows[args.limit - 1])))
    return rows[: args.limit], base64.urlsafe_b64encode(cursor.encode()).decode()


def list_broadcasts(svc: Services, args: BroadcastQuery) -> JSON:
    query = repository.broadcasts_query(
        # An empty filter (a blank form field) filters nothing.
        stream_id=args.stream_id or None,
        stream_prefix=args.stream_prefix or None,
        app=args.app or None,
        appname=args.appname or None,
        format=args.format or None,
        status=args.status or None,
        since=args.since,
        until=args.until,
        after=args.after(str),
    ).options(selectinload(Broadcast.fragments), selectinload(Broadcast.archives))
    with svc.sessions() as session:
        rows, cursor = page(session, query, args, lambda b: (b.started_at, b.id))
        return {"items": [broadcast_json(svc, b) for b in rows], "next_cursor": cursor}


def get_broadcast(session: Session, broadcast_id: str) -> Broadcast:
    broadcast = session.get(Broadcast, broadcast_id)
    if broadcast is None:
        raise NotFound(f"no broadcast {broadcast_id!r}")
    return broadcast


def show_broadcast(svc: Services, broadcast_id: str) -> JSON:
    with svc.sessions() as session:
        return broadcast_json(svc, get_broadcast(session, broadcast_id))


def list_fragments(svc: Services, args: FragmentQuery) -> JSON:
    query = repository.fragments_query(
        stream_id=args.stream_id or None, since=args.since, until=args.until, after=args.after(int)
    )
    with svc.sessions() as session:
        rows, cursor = page(session, query, args, lambda f: (f.start, f.id))
        return {"items": [fragment_json(f) for f in rows], "next_cursor": cursor}


def show_job(svc: Services, job_id: str) -> JSON:
    with svc.sessions() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return jobs.job_view(session, job)


def list_jobs(svc: Services, args: PageQuery) -> JSON:
    with svc.sessions() as session:
        rows, cursor = page(session, jobs.jobs_query(after=args.after(str)), args, lambda j: (j.created_at, j.id))
        return {"items": [jobs.job_view(session, job) for job in rows], "next_cursor": cursor}
