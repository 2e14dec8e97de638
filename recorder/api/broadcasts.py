"""Broadcasts and fragments: list, show, declare, stitch."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from sqlalchemy.orm import Session

from recorder import actions
from recorder.api.auth import require_token
from recorder.api.openapi import (
    TOKEN,
    BroadcastList,
    BroadcastOut,
    DeclareWindow,
    FragmentList,
    Response,
    documented,
    errors,
)
from recorder.api.params import BroadcastQuery, FragmentQuery, json_body, page, query_args
from recorder.app import services
from recorder.errors import NotFound
from recorder.grouping import gaps
from recorder.store import repository
from recorder.store.models import Archive, Broadcast, Fragment
from recorder.timeutil import iso

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
@documented(
    query=BroadcastQuery, resp=Response(HTTP_200=BroadcastList, **errors(400, 401)), security=TOKEN, tags=["broadcasts"]
)
@require_token()
def list_broadcasts() -> dict[str, Any]:
    args = query_args(BroadcastQuery)
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
        after=args.after(),
    )
    with services().sessions() as session:
        rows, cursor = page(session, query, args, lambda b: (b.started_at, b.id))
        return {"items": [broadcast_json(b, detail=True) for b in rows], "next_cursor": cursor}


def _get_broadcast(session: Session, broadcast_id: str) -> Broadcast:
    broadcast = session.get(Broadcast, broadcast_id)
    if broadcast is None:
        raise NotFound(f"no broadcast {broadcast_id!r}")
    return broadcast


@bp.get("/v1/broadcasts/<broadcast_id>")
@documented(resp=Response(HTTP_200=BroadcastOut, **errors(401, 404)), security=TOKEN, tags=["broadcasts"])
@require_token()
def show_broadcast(broadcast_id: str) -> dict[str, Any]:
    with services().sessions() as session:
        return broadcast_json(_get_broadcast(session, broadcast_id), detail=True)


@bp.post("/v1/broadcasts")
@documented(
    json=DeclareWindow,
    resp=Response(HTTP_201=BroadcastOut, **errors(400, 401, 403)),
    security=TOKEN,
    tags=["broadcasts"],
)
@require_token(admin=True)
def declare_broadcast() -> tuple[dict[str, Any], int]:
    """Declare a window the app knows (a class from 9:00 to 9:45): its fragments are one broadcast."""
    broadcast_id = actions.declare(json_body(DeclareWindow))
    with services().sessions() as session:
        return broadcast_json(_get_broadcast(session, broadcast_id), detail=True), 201


@bp.post("/v1/broadcasts/<broadcast_id>/stitch")
@documented(resp=Response(HTTP_202=BroadcastOut, **errors(400, 401, 403, 404)), security=TOKEN, tags=["broadcasts"])
@require_token(admin=True)
def stitch_broadcast(broadcast_id: str) -> tuple[dict[str, Any], int]:
    actions.stitch_now(broadcast_id)
    with services().sessions() as session:
        return broadcast_json(_get_broadcast(session, broadcast_id), detail=True), 202


@bp.get("/v1/fragments")
@documented(
    query=FragmentQuery, resp=Response(HTTP_200=FragmentList, **errors(400, 401)), security=TOKEN, tags=["fragments"]
)
@require_token()
def list_fragments() -> dict[str, Any]:
    args = query_args(FragmentQuery)
    query = repository.fragments_query(
        stream_id=args.stream_id or None, since=args.since, until=args.until, after=args.after()
    )
    with services().sessions() as session:
        rows, cursor = page(session, query, args, lambda f: (f.start, f.id))
        return {"items": [fragment_json(f) for f in rows], "next_cursor": cursor}
