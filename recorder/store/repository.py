"""Repositories: every state change of events, fragments and broadcasts.

Each function runs inside the caller's transaction and is idempotent, so a
callback delivered three times or a task run twice changes nothing more.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from recorder.events import FragmentInfo
from recorder.grouping import within_window
from recorder.store.models import Archive, Base, Broadcast, Event, Fragment, Stream

ACTIVE = ("open", "settling")


def _insert_ignore(session: Session, model: type[Base], values: dict[str, Any]) -> int | None:
    """INSERT ... ON CONFLICT DO NOTHING; the new primary key, or None if it existed."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(model).values(**values).on_conflict_do_nothing().returning(model.id)  # type: ignore[attr-defined]
    return session.execute(statement).scalar_one_or_none()


def new_broadcast_id() -> str:
    return "b" + secrets.token_hex(8)


# --- intake -----------------------------------------------------------------


def store_callback(
    session: Session,
    *,
    provider: str,
    event_type: str,
    dedupe_key: str,
    body: str,
    fragment: FragmentInfo | None,
    now: float,
) -> int | None:
    """Store a raw callback and its fragment in one go; None if it was a duplicate."""
    event_id = _insert_ignore(
        session,
        Event,
        {"provider": provider, "event_type": event_type, "dedupe_key": dedupe_key, "body": body, "received_at": now},
    )
    if event_id is None:
        return None
    if fragment is not None:
        _insert_ignore(
            session,
            Fragment,
            {
                "source_key": fragment.source_key,
                "event_id": event_id,
                "app": fragment.app,
                "appname": fragment.appname,
                "stream_id": fragment.stream_id,
                "format": fragment.format.value,
                "start": fragment.start,
                "end": fragment.end,
                "duration": fragment.duration,
                "file_size": fragment.file_size,
                "url": fragment.url,
                "session_id": fragment.session_id,
                "received_at": now,
            },
        )
    return event_id


# --- grouping ---------------------------------------------------------------


def _lock_stream(session: Session, fragment: Fragment) -> Stream:
    values = {
        "app": fragment.app,
        "appname": fragment.appname,
        "stream_id": fragment.stream_id,
        "format": fragment.format,
    }
    _insert_ignore(session, Stream, {**values, "live": False})
    query = select(Stream).filter_by(**values).with_for_update()
    return session.execute(query).scalar_one()


def handle_event(session: Session, event_id: int, *, window: float, now: float) -> bool:
    """Group the event's fragment into its broadcast; False if already handled."""
    event = session.get(Event, event_id, with_for_update=True)
    if event is None or event.handled_at is not None:
        return False
    fragment = session.execute(select(Fragment).filter_by(event_id=event_id)).scalar_one_or_none()
    if fragment is not None and fragment.broadcast_id is None:
        assign_fragment(session, fragment, window=window, now=now)
    event.handled_at = now
    return True


def assign_fragment(session: Session, fragment: Fragment, *, window: float, now: float) -> Broadcast:
    """Put a fragment into the broadcast it touches, merging any it bridges.

    Broadcasts of one stream are kept more than ``window`` apart, so the
    broadcasts within reach of the new fragment are all it can join or bridge.
    """
    stream = _lock_stream(session, fragment)
    candidates = list(
        session.execute(
            select(Broadcast)
            .where(
                Broadcast.stream_pk == stream.id,
                Broadcast.status != "merged",
                Broadcast.started_at <= fragment.end + window,
                Broadcast.ended_at >= fragment.start - window,
            )
            .order_by(Broadcast.version.desc(), Broadcast.created_at, Broadcast.id)
        ).scalars()
    )
    candidates = [
        b for b in candidates if within_window(b.started_at, b.ended_at, fragment.start, fragment.end, window)
    ]
    if not candidates:
        broadcast = Broadcast(
            id=new_broadcast_id(),
            stream_pk=stream.id,
            app=fragment.app,
            appname=fragment.appname,
            stream_id=fragment.stream_id,
            format=fragment.format,
            status="settling",
            version=0,
            attempts=0,
            started_at=fragment.start,
            ended_at=fragment.end,
            last_callback_at=fragment.received_at,
            created_at=now,
            updated_at=now,
        )
        session.add(broadcast)
        session.flush()
    else:
        broadcast, *absorbed = candidates
        for other in absorbed:
            session.execute(update(Fragment).where(Fragment.broadcast_id == other.id).values(broadcast_id=broadcast.id))
            broadcast.started_at = min(broadcast.started_at, other.started_at)
            broadcast.ended_at = max(broadcast.ended_at, other.ended_at)
            broadcast.last_callback_at = max(broadcast.last_callback_at, other.last_callback_at)
            other.status, other.merged_into, other.updated_at = "merged", broadcast.id, now
        broadcast.started_at = min(broadcast.started_at, fragment.start)
        broadcast.ended_at = max(broadcast.ended_at, fragment.end)
        broadcast.last_callback_at = max(broadcast.last_callback_at, fragment.received_at)
        if broadcast.status != "stitching":  # a running stitch notices the change itself
            reopen(broadcast, now)
    fragment.broadcast_id = broadcast.id
    return broadcast


def reopen(broadcast: Broadcast, now: float) -> None:
    broadcast.status = "settling"
    broadcast.error = None
    broadcast.attempts = 0
    broadcast.first_failure_at = None
    broadcast.updated_at = now


# --- settling and leases ----------------------------------------------------


@dataclass(frozen=True)
class SweepWork:
    events: list[int]
    stitches: list[str]


def sweep(session: Session, *, settle: float, lease: float, now: float, event_grace: float = 5.0) -> SweepWork:
    """Find stored-but-unhandled events, settle quiet broadcasts, pick due stitches."""
    events = list(
        session.execute(
            select(Event.id)
            .where(Event.handled_at.is_(None), Event.received_at <= now - event_grace)
            .order_by(Event.id)
            .limit(1000)
        ).scalars()
    )
    quiet_since = func.max(Broadcast.ended_at, Broadcast.last_callback_at)
    if session.get_bind().dialect.name == "postgresql":
        quiet_since = func.greatest(Broadcast.ended_at, Broadcast.last_callback_at)
    session.execute(
        update(Broadcast)
        .where(Broadcast.status.in_(ACTIVE), quiet_since + settle <= now)
        .values(status="stitching", next_attempt_at=now, enqueued_at=None, updated_at=now)
    )
    due = list(
        session.execute(
            select(Broadcast)
            .where(
                Broadcast.status == "stitching",
                Broadcast.next_attempt_at <= now,
                or_(Broadcast.lease_until.is_(None), Broadcast.lease_until < now),
                or_(Broadcast.enqueued_at.is_(None), Broadcast.enqueued_at < now - lease),
            )
            .order_by(Broadcast.next_attempt_at)
            .limit(1000)
        ).scalars()
    )
    for broadcast in due:
        broadcast.enqueued_at = now
    return SweepWork(events, [b.id for b in due])


def request_stitch(session: Session, broadcast: Broadcast, *, now: float) -> None:
    """Finalize now or re-stitch: the next archive is a new version."""
    if broadcast.status != "stitching":
        reopen(broadcast, now)
        broadcast.status = "stitching"
    broadcast.next_attempt_at = now
    broadcast.enqueued_at = now


@dataclass(frozen=True)
class StitchJob:
    """What a worker stitches: a snapshot taken when it acquired the lease."""

    broadcast_id: str
    app: str
    appname: str
    stream_id: str
    format: str
    started_at: float
    ended_at: float
    next_version: int
    fragments: list[Fragment]


def acquire_lease(session: Session, broadcast_id: str, *, owner: str, lease: float, now: float) -> StitchJob | None:
    """Take the broadcast for stitching unless someone holds it or it is not due."""
    taken = session.execute(
        update(Broadcast)
        .where(
            Broadcast.id == broadcast_id,
            Broadcast.status == "stitching",
            or_(Broadcast.lease_until.is_(None), Broadcast.lease_until < now),
            or_(Broadcast.next_attempt_at.is_(None), Broadcast.next_attempt_at <= now),
        )
        .values(lease_owner=owner, lease_until=now + lease, attempts=Broadcast.attempts + 1, updated_at=now)
    ).rowcount
    if not taken:
        return None
    broadcast = session.get_one(Broadcast, broadcast_id, populate_existing=True)
    fragments = list(
        session.execute(
            select(Fragment).filter_by(broadcast_id=broadcast_id).order_by(Fragment.start, Fragment.id)
        ).scalars()
    )
    return StitchJob(
        broadcast.id,
        broadcast.app,
        broadcast.appname,
        broadcast.stream_id,
        broadcast.format,
        broadcast.started_at,
        broadcast.ended_at,
        broadcast.version + 1,
        fragments,
    )


def renew_lease(session: Session, broadcast_id: str, *, owner: str, lease: float, now: float) -> bool:
    return bool(
        session.execute(
            update(Broadcast)
            .where(Broadcast.id == broadcast_id, Broadcast.lease_owner == owner)
            .values(lease_until=now + lease)
        ).rowcount
    )


def _held(session: Session, broadcast_id: str, owner: str) -> Broadcast | None:
    broadcast = session.get(Broadcast, broadcast_id, with_for_update=True, populate_existing=True)
    if broadcast is None or broadcast.lease_owner != owner:
        return None
    broadcast.lease_owner = broadcast.lease_until = None
    return broadcast


def record_archive(session: Session, job: StitchJob, archive: Archive, *, owner: str, now: float) -> bool:
    """Publish a stored archive as the broadcast's next version; False if the lease was lost."""
    broadcast = _held(session, job.broadcast_id, owner)
    if broadcast is None or broadcast.version + 1 != archive.version:
        return False
    session.add(archive)
    broadcast.version = archive.version
    current = set(session.execute(select(Fragment.id).filter_by(broadcast_id=broadcast.id)).scalars())
    # Fragments that arrived while we stitched make this version already stale.
    broadcast.status = "archived" if current == {f.id for f in job.fragments} else "settling"
    broadcast.error = None
    broadcast.attempts = 0
    broadcast.first_failure_at = broadcast.next_attempt_at = None
    broadcast.updated_at = now
    return True


def record_failure(
    session: Session, job: StitchJob, reason: str, *, owner: str, transient: bool, retry_for: float, now: float
) -> str:
    """Schedule a retry with backoff, or fail the broadcast; returns the new status."""
    broadcast = _held(session, job.broadcast_id, owner)
    if broadcast is None:
        return "lost-lease"
    broadcast.first_failure_at = broadcast.first_failure_at or now
    broadcast.updated_at = now
    if transient and now - broadcast.first_failure_at < retry_for:
        base = max(1.0, retry_for / 40)
        broadcast.next_attempt_at = now + min(retry_for / 4, base * 2 ** (broadcast.attempts - 1))
        broadcast.error = f"retrying: {reason}"
        return "stitching"
    broadcast.status = "failed"
    broadcast.error = reason
    return "failed"


def save_probe(session: Session, fragment_id: int, *, probe: str, sha256: str) -> None:
    session.execute(update(Fragment).where(Fragment.id == fragment_id).values(probe=probe, sha256=sha256))


# --- queries ----------------------------------------------------------------


def broadcasts_query(
    *,
    stream_id: str | None = None,
    status: str | None = None,
    since: float | None = None,
    until: float | None = None,
    after: tuple[float, str] | None = None,
) -> Select[tuple[Broadcast]]:
    """Newest first; ``after`` is the (started_at, id) of the previous page's last row."""
    query = select(Broadcast).where(Broadcast.status != "merged")
    if stream_id is not None:
        query = query.where(Broadcast.stream_id == stream_id)
    if status is not None:
        query = query.where(Broadcast.status == status)
    if since is not None:
        query = query.where(Broadcast.ended_at >= since)
    if until is not None:
        query = query.where(Broadcast.started_at <= until)
    if after is not None:
        started, last_id = after
        query = query.where(
            or_(Broadcast.started_at < started, (Broadcast.started_at == started) & (Broadcast.id < last_id))
        )
    return query.order_by(Broadcast.started_at.desc(), Broadcast.id.desc())


def fragments_query(
    *, stream_id: str | None, since: float | None, until: float | None, after: tuple[float, int] | None
) -> Select[tuple[Fragment]]:
    query = select(Fragment)
    if stream_id is not None:
        query = query.where(Fragment.stream_id == stream_id)
    if since is not None:
        query = query.where(Fragment.end >= since)
    if until is not None:
        query = query.where(Fragment.start <= until)
    if after is not None:
        start, last_id = after
        query = query.where(or_(Fragment.start < start, (Fragment.start == start) & (Fragment.id < last_id)))
    return query.order_by(Fragment.start.desc(), Fragment.id.desc())
