"""Broadcasts and fragments: list, show, declare, stitch."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from flask import Blueprint, request
from sqlalchemy.orm import Session

from recorder.api.auth import require_token
from recorder.app import services
from recorder.errors import BadRequest, NotFound
from recorder.grouping import gaps
from recorder.queue import STITCH
from recorder.store import repository
from recorder.store.db import transaction
from recorder.store.models import Archive, Broadcast, Fragment
from recorder.timeutil import iso, parse_time

bp = Blueprint("broadcasts", __name__)

MAX_LIMIT = 500


def encode_cursor(*values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode()


def decode_cursor(cursor: str) -> list[Any]:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except ValueError:
        raise BadRequest("cursor is not one this API returned") from None
    if not isinstance(values, list) or len(values) != 2:
        raise BadRequest("cursor is not one this API returned")
    return values


def _time_arg(name: str) -> float | None:
    value = request.args.get(name)
    if value is None or value == "":
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise BadRequest(f"{name}: expected ISO 8601 or UNIX seconds, got {value!r}") from None


def _limit() -> int:
    value = request.args.get("limit", "50")
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise BadRequest(f"limit: expected an integer from 1 to {MAX_LIMIT}")
    return int(value)


def fragment_json(fragment: Fragment) -> dict[str, Any]:
    return {
        "id": fragment.id,
        "source_key": fragment.source_key,
        "broadcast_id": fragment.broadcast_id,
        "app": fragment.app,
        "appname": fragment.appname,
        "stream_id": fragment.stream_id,
        "format": fragment.format,
        "start": iso(fragment.start),
        "end": iso(fragment.end),
        "duration": fragment.duration,
        "file_size": fragment.file_size,
        "url": fragment.url,
        "session_id": fragment.session_id,
        "received_at": iso(fragment.received_at),
    }


def archive_json(archive: Archive) -> dict[str, Any]:
    store = services().store
    return {
        "key": archive.key,
        "manifest_key": archive.manifest_key,
        "url": store.url(archive.key, expires=services().settings.url_expiry_seconds),
        "size": archive.size,
        "sha256": archive.sha256,
        "duration": archive.duration,
        "version": archive.version,
        "created_at": iso(archive.created_at),
    }


def broadcast_json(broadcast: Broadcast, *, detail: bool) -> dict[str, Any]:
    archives = [archive_json(a) for a in broadcast.archives] if detail else []
    result: dict[str, Any] = {
        "id": broadcast.id,
        "app": broadcast.app,
        "appname": broadcast.appname,
        "stream_id": broadcast.stream_id,
        "format": broadcast.format,
        "status": broadcast.status,
        "version": broadcast.version,
        "started_at": iso(broadcast.started_at),
        "ended_at": iso(broadcast.ended_at),
        "error": broadcast.error,
    }
    if detail:
        result["fragments"] = [fragment_json(f) for f in broadcast.fragments]
        result["gaps"] = [
            {"start": iso(g.start), "end": iso(g.end), "seconds": round(g.seconds, 3)}
            for g in gaps(broadcast.fragments)
        ]
        result["archive"] = archives[-1] if archives else None
        result["archives"] = archives
        result["merged_into"] = broadcast.merged_into
    return result


@bp.get("/v1/broadcasts")
@require_token()
def list_broadcasts() -> dict[str, Any]:
    limit = _limit()
    cursor = request.args.get("cursor")
    after = tuple(decode_cursor(cursor)) if cursor else None
    query = repository.broadcasts_query(
        stream_id=request.args.get("stream_id") or None,
        status=request.args.get("status") or None,
        since=_time_arg("since"),
        until=_time_arg("until"),
        after=after,  # type: ignore[arg-type]
    ).limit(limit + 1)
    with services().sessions() as session:
        rows = list(session.execute(query).scalars())
        items = [broadcast_json(b, detail=True) for b in rows[:limit]]
    more = len(rows) > limit
    return {
        "items": items,
        "next_cursor": encode_cursor(rows[limit - 1].started_at, rows[limit - 1].id) if more else None,
    }


def _get_broadcast(session: Session, broadcast_id: str) -> Broadcast:
    broadcast = session.get(Broadcast, broadcast_id)
    if broadcast is None:
        raise NotFound(f"no broadcast {broadcast_id!r}")
    return broadcast


@bp.get("/v1/broadcasts/<broadcast_id>")
@require_token()
def show_broadcast(broadcast_id: str) -> dict[str, Any]:
    with services().sessions() as session:
        return broadcast_json(_get_broadcast(session, broadcast_id), detail=True)


@bp.post("/v1/broadcasts/<broadcast_id>/stitch")
@require_token(admin=True)
def stitch_broadcast(broadcast_id: str) -> tuple[dict[str, Any], int]:
    svc = services()
    with transaction(svc.sessions) as session:
        broadcast = _get_broadcast(session, broadcast_id)
        if broadcast.status == "merged":
            raise BadRequest(f"broadcast {broadcast_id} was merged into {broadcast.merged_into}; stitch that one")
        repository.request_stitch(session, broadcast, now=time.time())
    svc.publisher.send(STITCH, broadcast_id)
    with svc.sessions() as session:
        return broadcast_json(_get_broadcast(session, broadcast_id), detail=True), 202


@bp.get("/v1/fragments")
@require_token()
def list_fragments() -> dict[str, Any]:
    limit = _limit()
    cursor = request.args.get("cursor")
    after = tuple(decode_cursor(cursor)) if cursor else None
    query = repository.fragments_query(
        stream_id=request.args.get("stream_id") or None,
        since=_time_arg("since"),
        until=_time_arg("until"),
        after=after,  # type: ignore[arg-type]
    ).limit(limit + 1)
    with services().sessions() as session:
        rows = list(session.execute(query).scalars())
    more = len(rows) > limit
    return {
        "items": [fragment_json(f) for f in rows[:limit]],
        "next_cursor": encode_cursor(rows[limit - 1].start, rows[limit - 1].id) if more else None,
    }
