"""Rows as the API's JSON documents; shared by the API, the web pages and the CLI."""

from __future__ import annotations

from typing import Any

from rich import filesize

from recorder.events import by_preference
from recorder.grouping import Gap, gaps
from recorder.services import Services
from recorder.store.models import Archive, Broadcast, Fragment
from recorder.timeutil import iso


def human_duration(seconds: float | None) -> str:
    """``6.0 s``, ``4 min 40 s``, ``1 h 02 min``: for tables and pages."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {rest:02d} s"


def human_size(size: int | None) -> str:
    return filesize.decimal(size) if size is not None else "—"


def gap_json(gap: Gap) -> dict[str, Any]:
    return {"start": iso(gap.start), "end": iso(gap.end), "seconds": round(gap.seconds, 3)}


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


def archive_json(svc: Services, archive: Archive) -> dict[str, Any]:
    return {
        "format": archive.format,
        "verification": archive.verification,
        "key": archive.key,
        "manifest_key": archive.manifest_key,
        "url": svc.store.url(archive.key, expires=svc.settings.url_expiry_seconds),
        "size": archive.size,
        "sha256": archive.sha256,
        "duration": archive.duration,
        "version": archive.version,
        "created_at": iso(archive.created_at),
    }


def broadcast_json(svc: Services, broadcast: Broadcast) -> dict[str, Any]:
    archives = [archive_json(svc, a) for a in broadcast.archives]
    # The latest version's archive in the primary format; every other one is in "archives".
    latest = {a["format"]: a for a in archives if a["version"] == broadcast.version}
    primary = latest[by_preference(latest)[0]] if latest else None
    return {
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
        "fragments": [fragment_json(f) for f in broadcast.fragments],
        "gaps": [
            {"start": iso(g.start), "end": iso(g.end), "seconds": round(g.seconds, 3)}
            for g in gaps(broadcast.fragments)
        ],
        "archive": primary,
        "archives": archives,
        "merged_into": broadcast.merged_into,
    }
