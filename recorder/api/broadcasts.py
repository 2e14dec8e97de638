"""Broadcasts and fragments: list, show, declare, stitch."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, request
from sqlalchemy.orm import Session

from recorder.api.auth import require_token
from recorder.api.params import after_arg, page, time_arg
from recorder.app import services
from recorder.errors import BadRequest, NotFound
from recorder.grouping import gaps
from recorder.queue import STITCH
from recorder.store import repository
from recorder.store.db import transaction
from recorder.store.models import Archive, Broadcast, Fragment
from recorder.timeutil import iso, parse_time

bp = Blueprint("broadcasts", __name__)


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
        "error": fragment.error,
    }


def archive_json(archive: Archive) -> dict[str, Any]:
    store = services().store
    return {
        "format": archive.format,
        "verification": archive.verification,
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
        "declared": broadcast.declared,
    }
    if detail:
        result["fragments"] = [fragment_json(f) for f in broadcast.fragments]
        result["gaps"] = [
            {"start": iso(g.start), "end": iso(g.end), "seconds": round(g.seconds, 3)}
            for g in gaps(broadcast.fragments)
        ]
        latest = [a for a in archives if a["version"] == broadcast.version]
        result["archive"] = latest[0] if latest else None
        result["archives"] = archives
        result["merged_into"] = broadcast.merged_into
    return result


@bp.get("/v1/broadcasts")
@require_token()
def list_broadcasts() -> dict[str, Any]:
    query = repository.broadcasts_query(
        stream_id=request.args.get("stream_id") or None,
        stream_prefix=request.args.get("stream_prefix") or None,
        app=request.args.get("app") or None,
        appname=request.args.get("appname") or None,
        format=request.args.get("format") or None,
        status=request.args.get("status") or None,
        since=time_arg("since"),
        until=time_arg("until"),
        after=after_arg(),
    )
    with services().sessions() as session:
        rows, cursor = page(session, query, lambda b: (b.started_at, b.id))
        return {"items": [broadcast_json(b, detail=True) for b in rows], "next_cursor": cursor}


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


@bp.post("/v1/broadcasts")
@require_token(admin=True)
def declare_broadcast() -> tuple[dict[str, Any], int]:
    """Declare a window the app knows (a class from 9:00 to 9:45): its fragments are one broadcast."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object with stream_id, start and end")
    stream_id = body.get("stream_id")
    if not isinstance(stream_id, str) or not stream_id.strip():
        raise BadRequest("stream_id: required, a non-empty string")
    try:
        start, end = parse_time(body["start"]), parse_time(body["end"])
    except (KeyError, TypeError, ValueError):
        raise BadRequest("start and end: required, ISO 8601 or UNIX seconds") from None
    if end <= start:
        raise BadRequest("end must be after start")
    app, appname = body.get("app", ""), body.get("appname", "")
    if not isinstance(app, str) or not isinstance(appname, str):
        raise BadRequest("app and appname must be strings")
    svc = services()
    with transaction(svc.sessions) as session:
        broadcast = repository.declare_window(
            session,
            stream_id=stream_id,
            start=start,
            end=end,
            app=app,
            appname=appname,
            window=svc.settings.reconnect_window,
            now=time.time(),
        )
        broadcast_id = broadcast.id
    with svc.sessions() as session:
        return broadcast_json(_get_broadcast(session, broadcast_id), detail=True), 201


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
    query = repository.fragments_query(
        stream_id=request.args.get("stream_id") or None,
        since=time_arg("since"),
        until=time_arg("until"),
        after=after_arg(),
    )
    with services().sessions() as session:
        rows, cursor = page(session, query, lambda f: (f.start, f.id))
        return {"items": [fragment_json(f) for f in rows], "next_cursor": cursor}
