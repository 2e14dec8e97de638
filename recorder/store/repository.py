"""Repositories: every state change of events, fragments and broadcasts.

Each function runs inside the caller's transaction and is idempotent, so a
callback delivered three times or a task run twice changes nothing more.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Insert, Select, String, exists, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from recorder.events import Event as Parsed
from recorder.events import FragmentInfo, PushSignal, RecordSignal
from recorder.grouping import group_fragments
from recorder.store.models import Archive, Base, Broadcast, Event, Fragment, Stream

ACTIVE = ("open", "settling")
# Longer than Tencent's longest recording cut (2 h): a push still "live" after this
# much quiet lost its stop event.
STALE_LIVE_SECONDS = 6 * 3600
# The sweep sends an unhandled event again at most this often (a lost publish, a dead worker).
RESEND_SECONDS = 300.0


def _insert_ignore(session: Session, model: type[Base], values: dict[str, Any]) -> int | None:
    """INSERT ... ON CONFLICT DO NOTHING; the new primary key, or None if it existed."""
    connection = session.connection()
    statement = _insert_ignore_statement(connection.dialect.name, model, "id")
    return connection.execute(statement, values).scalar_one_or_none()


@cache
def _insert_ignore_statement(dialect: str, model: type[Base], *returning: str) -> Insert:
    """Built once per table and RETURNING list: building it costs more than running it (SQLAlchemy
    caches the SQL, not the statement)."""
    insert = (pg_insert if dialect == "postgresql" else sqlite_insert)(model).on_conflict_do_nothing()
    return insert.returning(*(getattr(model, name) for name in returning)) if returning else insert  # type: ignore[no-any-return]


def _greatest(session: Session, *values: Any) -> Any:
    """SQL max of values: ``greatest`` on PostgreSQL, scalar ``max`` on SQLite."""
    return (func.greatest if session.get_bind().dialect.name == "postgresql" else func.max)(*values)


def new_broadcast_id() -> str:
    return "b" + secrets.token_hex(8)


# --- intake -----------------------------------------------------------------


@dataclass(frozen=True)
class NewCallback:
    """A verified callback to store: the event as received and the fragment it reports, if any."""

    provider: str
    event_type: str
    dedupe_key: str
    body: str
    fragment: FragmentInfo | None
    received_at: float


def store_callbacks(session: Session, callbacks: Sequence[NewCallback]) -> list[int | None]:
    """Store raw callbacks and their fragments, one statement per table for all of them.

    Each callback's new event id, or None if it was stored before (or earlier in ``callbacks``).
    """
    connection = session.connection()  # Core, not the ORM: this is every callback's hot path
    dialect = connection.dialect.name
    new_events = connection.execute(
        _insert_ignore_statement(dialect, Event, "dedupe_key", "id"),
        [
            {
                "provider": c.provider,
                "event_type": c.event_type,
                "dedupe_key": c.dedupe_key,
                "body": c.body,
                "received_at": c.received_at,
            }
            for c in callbacks
        ],
    )
    event_ids: dict[str, int] = {key: event_id for key, event_id in new_events}
    fragments = [
        _fragment_row(c.fragment, event_ids[c.dedupe_key], c.received_at)
        for c in callbacks
        if c.fragment is not None and c.dedupe_key in event_ids
    ]
    if fragments:
        connection.execute(_insert_ignore_statement(dialect, Fragment), fragments)
    return [event_ids.pop(c.dedupe_key, None) for c in callbacks]  # pop: a repeat in the batch is a duplicate


def store_callback(session: Session, callback: NewCallback) -> int | None:
    return store_callbacks(session, [callback])[0]


def _fragment_row(fragment: FragmentInfo, event_id: int, received_at: float) -> dict[str, Any]:
    return {
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
        "timed": fragment.timed,
        "received_at": received_at,
    }


# --- grouping ---------------------------------------------------------------


def _lock_stream(session: Session, app: str, appname: str, stream_id: str) -> Stream:
    values = {"app": app, "appname": appname, "stream_id": stream_id}
    _insert_ignore(session, Stream, values)
    return session.execute(select(Stream).filter_by(**values).with_for_update()).scalar_one()


def _new_broadcast(
    session: Session, stream: Stream, fragments: list[Fragment], *, status: str, now: float
) -> Broadcast:
    broadcast = Broadcast(
        id=new_broadcast_id(),
        stream_pk=stream.id,
        app=stream.app,
        appname=stream.appname,
        stream_id=stream.stream_id,
        format=",".join(sorted({f.format for f in fragments})),
        status=status,
        declared=False,
        version=0,
        attempts=0,
        started_at=min(f.start for f in fragments),
        ended_at=max(f.end for f in fragments),
        last_callback_at=max(f.received_at for f in fragments),
        created_at=now,
        updated_at=now,
    )
    session.add(broadcast)
    session.flush()
    for fragment in fragments:
        fragment.broadcast_id = broadcast.id
    return broadcast


def _take(broadcast: Broadcast, fragment: Fragment) -> None:
    """Add a fragment to a broadcast's span, formats and quiet clock."""
    fragment.broadcast_id = broadcast.id
    if not broadcast.declared:
        broadcast.started_at = min(broadcast.started_at, fragment.start)
        broadcast.ended_at = max(broadcast.ended_at, fragment.end)
    broadcast.format = ",".join(sorted({*filter(None, broadcast.format.split(",")), fragment.format}))
    broadcast.last_callback_at = max(broadcast.last_callback_at, fragment.received_at)


def _declared_window(session: Session, fragment: Fragment) -> Broadcast | None:
    """The declared window that holds the fragment: of overlapping ones the earliest, as in
    grouping.window_for, and of equal ones the first by id, so that arrival order never decides."""
    middle = (fragment.start + fragment.end) / 2
    query = (
        select(Broadcast)
        .where(
            Broadcast.declared.is_(True),
            Broadcast.stream_id == fragment.stream_id,
            Broadcast.app.in_(("", fragment.app)),
            Broadcast.appname.in_(("", fragment.appname)),
            or_(Broadcast.window_format.is_(None), Broadcast.window_format == fragment.format),
            Broadcast.started_at <= middle,
            Broadcast.ended_at >= middle,
        )
        .order_by(Broadcast.started_at, Broadcast.ended_at, Broadcast.id)
        .limit(1)
    )
    return session.execute(query).scalar_one_or_none()


def assign_fragment(session: Session, fragment: Fragment, *, window: float, now: float) -> Broadcast:
    """Put a fragment into its broadcast, merging every broadcast it links.

    A fragment links to those of its stream within ``window`` seconds and to
    those of the same recording session; linked broadcasts become one.
    """
    stream = _lock_stream(session, fragment.app, fragment.appname, fragment.stream_id)
    # A declared window may have taken it meanwhile, even one that could not lock this stream
    # row (new since): the row lock waits for that window's transaction.
    session.refresh(fragment, with_for_update=True)
    if fragment.broadcast_id is not None:
        return session.get_one(Broadcast, fragment.broadcast_id)
    broadcast = _declared_window(session, fragment)
    if broadcast is None:
        near = Fragment.start <= fragment.end + window
        near &= Fragment.end >= fragment.start - window
        links = or_(near, Fragment.session_id == fragment.session_id) if fragment.session_id else near
        candidates = list(
            session.execute(
                select(Broadcast)
                .join(Fragment, Fragment.broadcast_id == Broadcast.id)
                .where(
                    Broadcast.stream_pk == stream.id,
                    Broadcast.declared.is_(False),
                    Broadcast.status != "merged",
                    Fragment.id != fragment.id,
                    links,
                )
                .distinct()
                # The highest version survives (its archives stay current), even over one being stitched.
                .order_by(Broadcast.version.desc(), Broadcast.created_at, Broadcast.id)
            ).scalars()
        )
        if not candidates:
            return _new_broadcast(session, stream, [fragment], status=_arrival_status(stream), now=now)
        broadcast, *absorbed = candidates
        for other in absorbed:
            for moved in session.execute(select(Fragment).filter_by(broadcast_id=other.id)).scalars():
                _take(broadcast, moved)
            _merge(other, into=broadcast, now=now)
    _take(broadcast, fragment)
    if broadcast.status != "stitching":  # a running stitch notices the change itself
        reopen(broadcast, now, status=_arrival_status(stream))
    return broadcast


def _merge(broadcast: Broadcast, *, into: Broadcast, now: float) -> None:
    """``broadcast``'s fragments are ``into``'s now: a stitch of it in progress works on a stale
    snapshot, so it loses its lease."""
    broadcast.status, broadcast.merged_into, broadcast.updated_at = "merged", into.id, now
    broadcast.lease_owner = broadcast.lease_until = None


def _arrival_status(stream: Stream) -> str:
    return "open" if stream.live_sequence else "settling"


def reopen(broadcast: Broadcast, now: float, *, status: str = "settling") -> None:
    broadcast.status = status
    broadcast.error = None
    broadcast.attempts = 0
    broadcast.first_failure_at = None
    broadcast.updated_at = now


def declare_window(
    session: Session,
    *,
    stream_id: str,
    start: float,
    end: float,
    app: str = "",
    appname: str = "",
    format: str | None = None,
    window: float,
    now: float,
) -> Broadcast:
    """A broadcast the app knows: the fragments inside it (of ``format``, if given) move in,
    whatever the gaps.

    What stays behind in the broadcasts they came from is regrouped, so a
    broadcast the window cut in two becomes two.
    """
    _insert_ignore(session, Stream, {"app": app, "appname": appname, "stream_id": stream_id})
    # Every grouping key of the stream id, not only the window's own: assign_fragment of any of
    # them waits for this window. In (app, appname) order, as an import stores its fragments
    # (jobs.start), so that no two transactions take them in opposite orders and deadlock.
    query = select(Stream).filter_by(stream_id=stream_id).order_by(Stream.app, Stream.appname).with_for_update()
    streams = session.execute(query).scalars().all()
    stream = next(s for s in streams if (s.app, s.appname) == (app, appname))
    broadcast = Broadcast(
        id=new_broadcast_id(),
        stream_pk=stream.id,
        app=app,
        appname=appname,
        stream_id=stream_id,
        format="",
        status="settling",
        declared=True,
        window_format=format or None,
        version=0,
        attempts=0,
        started_at=start,
        ended_at=end,
        last_callback_at=now,
        created_at=now,
        updated_at=now,
    )
    session.add(broadcast)
    session.flush()
    middle = (Fragment.start + Fragment.end) / 2
    inside = select(Fragment).where(Fragment.stream_id == stream_id, middle >= start, middle <= end)
    if app:
        inside = inside.where(Fragment.app == app)
    if appname:
        inside = inside.where(Fragment.appname == appname)
    if format:
        inside = inside.where(Fragment.format == format)
    # Locked, then judged where they are: an assign_fragment of one may have just ended.
    inside = inside.order_by(Fragment.id).with_for_update().execution_options(populate_existing=True)
    left: set[str] = set()
    for fragment in session.execute(inside).scalars().all():
        if _declared_window(session, fragment) is not broadcast:
            continue  # an earlier window that overlaps this one holds it
        if fragment.broadcast_id:
            left.add(fragment.broadcast_id)
        _take(broadcast, fragment)
    session.flush()
    for broadcast_id in sorted(left):
        _regroup(session, session.get_one(Broadcast, broadcast_id), into=broadcast, window=window, now=now)
    return broadcast


def _regroup(session: Session, broadcast: Broadcast, *, into: Broadcast, window: float, now: float) -> None:
    remaining = list(session.execute(select(Fragment).filter_by(broadcast_id=broadcast.id)).scalars())
    if not remaining:
        # A declared window another one emptied stays as it was (archived with its archives, say):
        # it still holds what falls in the rest of its span, so it is not merged away.
        if not broadcast.declared:
            _merge(broadcast, into=into, now=now)
        return
    stream = session.get_one(Stream, broadcast.stream_pk)
    # A declared window keeps the app's span and what is left inside it, whatever the gaps.
    first, *others = [remaining] if broadcast.declared else group_fragments(remaining, window, key=lambda f: 0)
    if not broadcast.declared:
        broadcast.started_at = min(f.start for f in first)
        broadcast.ended_at = max(f.end for f in first)
    broadcast.format = ",".join(sorted({f.format for f in first}))
    if broadcast.status != "stitching":
        reopen(broadcast, now)
    for group in others:
        _new_broadcast(session, stream, group, status="settling", now=now)


def fragment_of_event(session: Session, event_id: int) -> Fragment | None:
    return session.execute(select(Fragment).filter_by(event_id=event_id)).scalar_one_or_none()


def unhandled_event(session: Session, event_id: int) -> Event | None:
    event = session.get(Event, event_id, with_for_update=True)
    return event if event is not None and event.handled_at is None else None


def handle_event(session: Session, event: Event, parsed: Parsed, *, window: float, now: float) -> None:
    """Apply a stored event once: group its fragment, or apply its signal."""
    fragment = fragment_of_event(session, event.id)
    if fragment is not None and fragment.broadcast_id is None:
        assign_fragment(session, fragment, window=window, now=now)
    elif isinstance(parsed, (PushSignal, RecordSignal)):
        apply_signal(session, parsed, window=window, now=now)
    event.handled_at = now


def apply_signal(session: Session, signal: PushSignal | RecordSignal, *, window: float, now: float) -> None:
    """Push started/stopped and recording ended: a live push keeps its broadcast open.

    Signals are applied by their own time, not by when they are handled: one older
    than the last applied (or a start at the same moment as a stop) changes nothing,
    so a stop handled before its start cannot leave a stream live.
    """
    stream = _lock_stream(session, signal.app, signal.appname, signal.stream_id)
    start = isinstance(signal, PushSignal) and signal.live
    ended = isinstance(signal, PushSignal) or signal.event == "record_ended"
    if not (start or ended):
        return
    if stream.signal_at is not None and (signal.at < stream.signal_at or (start and signal.at == stream.signal_at)):
        return  # overtaken by a later signal
    if isinstance(signal, PushSignal) and not start and stream.live_sequence not in (None, signal.sequence):
        return  # a stop of an older push session
    stream.signal_at = signal.at
    if start:
        stream.live_sequence = signal.sequence
        session.execute(
            update(Broadcast)
            .where(
                Broadcast.stream_pk == stream.id,
                Broadcast.status == "settling",
                Broadcast.ended_at >= signal.at - window,
            )
            .values(status="open", updated_at=now)
        )
        return
    stream.live_sequence = None
    # Quiet is counted from this callback: Tencent uploads the last file after the push ends.
    session.execute(
        update(Broadcast)
        .where(Broadcast.stream_pk == stream.id, Broadcast.status.in_(ACTIVE))
        .values(status="settling", last_callback_at=_greatest(session, Broadcast.last_callback_at, now), updated_at=now)
    )


# --- settling and leases ----------------------------------------------------


@dataclass(frozen=True)
class SweepWork:
    events: list[int]
    stitches: list[str]
    given_up_fragments: list[int]  # ids of the fragments of the broadcasts this sweep failed


def sweep(
    session: Session, *, settle: float, lease: float, max_attempts: int, now: float, event_grace: float = 5.0
) -> SweepWork:
    """Find stored-but-unhandled events, settle quiet broadcasts, pick due stitches.

    A lease that expired while still held means its worker died (killed, out of
    memory, timed out); after ``max_attempts`` such deaths the broadcast fails
    instead of killing workers forever.
    """
    reason = f"stitching stopped {max_attempts} times without finishing (worker killed or timed out); last worker: "
    given_up = list(
        session.scalars(
            update(Broadcast)
            .where(
                Broadcast.status == "stitching",
                Broadcast.lease_owner.is_not(None),
                Broadcast.lease_until < now,
                Broadcast.attempts >= max_attempts,
            )
            .values(
                status="failed",
                error=literal(reason, String) + Broadcast.lease_owner,
                lease_owner=None,
                lease_until=None,
                updated_at=now,
            )
            .returning(Broadcast.id)
        )
    )
    # Each unhandled event again at most every RESEND_SECONDS, those never sent again first: a
    # backlog does not pile copies into the queue, and events that keep failing do not starve
    # newer ones out of the batch.
    events = list(
        session.scalars(
            select(Event.id)
            .where(
                Event.handled_at.is_(None),
                Event.received_at <= now - event_grace,
                or_(Event.resent_at.is_(None), Event.resent_at <= now - RESEND_SECONDS),
            )
            .order_by(Event.resent_at.is_not(None), Event.resent_at, Event.id)
            .limit(1000)
        )
    )
    if events:
        session.execute(update(Event).where(Event.id.in_(events)).values(resent_at=now))
    quiet_since = _greatest(session, Broadcast.ended_at, Broadcast.last_callback_at)
    # A fragment received but not grouped yet may still belong here: wait for it (not forever).
    ungrouped = exists().where(
        Fragment.broadcast_id.is_(None),
        Fragment.stream_id == Broadcast.stream_id,
        Fragment.received_at > now - STALE_LIVE_SECONDS,
    )
    settled = ~ungrouped & or_(
        (Broadcast.status == "settling") & (quiet_since + settle <= now),
        # An open broadcast whose push never reported its end is settled eventually.
        (Broadcast.status == "open") & (quiet_since + max(settle, STALE_LIVE_SECONDS) <= now),
    )
    session.execute(
        update(Broadcast)
        .where(settled)
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
    return SweepWork(events, [b.id for b in due], fragment_ids(session, given_up))


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


def _leased_to(owner: str) -> ColumnElement[bool]:
    """The broadcast is still being stitched under ``owner``'s lease (a merged one is not)."""
    return (Broadcast.lease_owner == owner) & (Broadcast.status == "stitching")


def renew_lease(session: Session, broadcast_id: str, *, owner: str, lease: float, now: float) -> bool:
    return bool(
        session.execute(
            update(Broadcast).where(Broadcast.id == broadcast_id, _leased_to(owner)).values(lease_until=now + lease)
        ).rowcount
    )


def holds_lease(session: Session, broadcast_id: str, *, owner: str, now: float) -> bool:
    """Whether ``owner``'s lease on the broadcast still stands: not taken over, merged away or run out."""
    held = exists().where(Broadcast.id == broadcast_id, _leased_to(owner), Broadcast.lease_until >= now)
    return bool(session.scalar(select(held)))


def may_store(session: Session, broadcast_id: str, key: str, *, owner: str, now: float) -> bool:
    """Whether ``owner`` may put the archive ``key`` (and its manifest and segments) in storage: it
    holds the lease, and no recorded archive has that key, as one another worker stored would."""
    recorded = session.scalar(select(exists().where(Archive.broadcast_id == broadcast_id, Archive.key == key)))
    return not recorded and holds_lease(session, broadcast_id, owner=owner, now=now)


def _held(session: Session, broadcast_id: str, owner: str) -> Broadcast | None:
    """The broadcast, its lease released, if ``owner`` still held it."""
    query = select(Broadcast).where(Broadcast.id == broadcast_id, _leased_to(owner)).with_for_update()
    broadcast = session.execute(query.execution_options(populate_existing=True)).scalar_one_or_none()
    if broadcast is not None:
        broadcast.lease_owner = broadcast.lease_until = None
    return broadcast


def record_archives(session: Session, job: StitchJob, archives: list[Archive], *, owner: str, now: float) -> str | None:
    """Publish stored archives (one per format) as the next version; the broadcast's new status
    (settling again if fragments arrived meanwhile), or None if the lease was lost."""
    broadcast = _held(session, job.broadcast_id, owner)
    if broadcast is None or broadcast.version + 1 != job.next_version:
        return None
    session.add_all(archives)
    broadcast.version = job.next_version
    current = set(session.execute(select(Fragment.id).filter_by(broadcast_id=broadcast.id)).scalars())
    suspect = [a.verification for a in archives if a.verification != "verified"]
    # Fragments that arrived while we stitched make this version already stale.
    if current != {f.id for f in job.fragments}:
        broadcast.status = "settling"
    else:
        broadcast.status = "suspect" if suspect else "archived"
    broadcast.error = "; ".join(suspect) or None
    broadcast.attempts = 0
    broadcast.first_failure_at = broadcast.next_attempt_at = None
    broadcast.updated_at = now
    return broadcast.status


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
        broadcast.enqueued_at = None  # its message is spent: the sweep sends it again when due
        broadcast.error = f"retrying: {reason}"
        return "stitching"
    broadcast.status = "failed"
    broadcast.error = reason
    return "failed"


def _not_yet_stitching() -> ColumnElement[bool]:
    """The fragment's broadcast is open or settling."""
    return Fragment.broadcast_id.in_(select(Broadcast.id).where(Broadcast.status.in_(("open", "settling"))))


def _worth_prefetching() -> tuple[ColumnElement[bool], ...]:
    """A fragment worth fetching before its broadcast settles: grouped into a broadcast that has
    not started stitching, not fetched and probed yet."""
    return (_not_yet_stitching(), Fragment.probe.is_(None))


def not_yet_stitching(session: Session, fragment_id: int) -> bool:
    return bool(session.scalar(select(exists().where(Fragment.id == fragment_id, _not_yet_stitching()))))


def fragments_to_prefetch(session: Session, event_ids: Sequence[int]) -> list[int]:
    """The fragments of these events worth prefetching."""
    query = select(Fragment.id).where(Fragment.event_id.in_(event_ids), *_worth_prefetching())
    return list(session.scalars(query.order_by(Fragment.id)))


def fragment_worth_prefetching(session: Session, fragment_id: int) -> Fragment | None:
    """The fragment, if it is (still) worth prefetching."""
    return session.scalars(select(Fragment).where(Fragment.id == fragment_id, *_worth_prefetching())).first()


def fragment_ids(session: Session, broadcast_ids: Sequence[str]) -> list[int]:
    if not broadcast_ids:
        return []
    query = select(Fragment.id).where(Fragment.broadcast_id.in_(broadcast_ids))
    return list(session.scalars(query.order_by(Fragment.id)))


def save_probe(session: Session, fragment_id: int, *, probe: str, sha256: str) -> None:
    session.execute(update(Fragment).where(Fragment.id == fragment_id).values(probe=probe, sha256=sha256, error=None))


def save_timing(session: Session, fragment_id: int, *, start: float, duration: float) -> None:
    session.execute(
        update(Fragment)
        .where(Fragment.id == fragment_id)
        .values(start=start, end=start + duration, duration=duration, timed=True)
    )


def save_fragment_error(session: Session, fragment_id: int, reason: str) -> None:
    session.execute(update(Fragment).where(Fragment.id == fragment_id).values(error=reason))


# --- queries ----------------------------------------------------------------


def like_prefix(column: Any, prefix: str) -> Any:
    """``column LIKE 'prefix%'`` with the prefix's own wildcards escaped."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(f"{escaped}%", escape="\\")


def broadcasts_query(
    *,
    stream_id: str | None = None,
    stream_prefix: str | None = None,
    app: str | None = None,
    appname: str | None = None,
    format: str | None = None,
    status: str | None = None,
    since: float | None = None,
    until: float | None = None,
    after: tuple[float, str] | None = None,
) -> Select[tuple[Broadcast]]:
    """Newest first; ``after`` is the (started_at, id) of the previous page's last row."""
    query = select(Broadcast).where(Broadcast.status != "merged")
    if stream_id is not None:
        query = query.where(Broadcast.stream_id == stream_id)
    if stream_prefix is not None:
        query = query.where(like_prefix(Broadcast.stream_id, stream_prefix))
    if app is not None:
        query = query.where(Broadcast.app == app)
    if appname is not None:
        query = query.where(Broadcast.appname == appname)
    if format is not None:
        query = query.where(like_prefix(Broadcast.format, format) | Broadcast.format.like(f"%,{format}%"))
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
