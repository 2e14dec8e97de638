"""SQLAlchemy models. Times are UNIX seconds (float) so arithmetic stays trivial
on SQLite and PostgreSQL alike; the API renders them as ISO 8601 UTC."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Event(Base):
    """A raw callback as received: stored before the 200, handled after."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    event_type: Mapped[str] = mapped_column(String(32))
    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True)
    body: Mapped[str] = mapped_column(Text)
    received_at: Mapped[float] = mapped_column(Float)
    handled_at: Mapped[float | None] = mapped_column(Float, index=True)
    # When the sweep last sent it again: it waits RESEND_SECONDS before the next time.
    resent_at: Mapped[float | None] = mapped_column(Float)


class Stream(Base):
    """One row per grouping key; locked while its fragments are (re)grouped.

    ``live_sequence`` is the push session in progress (events 1/0): while a push
    is live its broadcast does not settle.
    """

    __tablename__ = "streams"
    __table_args__ = (UniqueConstraint("app", "appname", "stream_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app: Mapped[str] = mapped_column(String(255))
    appname: Mapped[str] = mapped_column(String(255))
    stream_id: Mapped[str] = mapped_column(String(1024), index=True)
    live_sequence: Mapped[str | None] = mapped_column(String(128))
    # The time of the last push signal applied: an older one, handled late, is ignored.
    signal_at: Mapped[float | None] = mapped_column(Float)


class Broadcast(Base):
    __tablename__ = "broadcasts"
    __table_args__ = (
        Index("ix_broadcasts_stream_started", "stream_id", "started_at"),
        Index("ix_broadcasts_status", "status", "next_attempt_at"),
        Index("ix_broadcasts_started", "started_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    stream_pk: Mapped[int] = mapped_column(ForeignKey("streams.id"), index=True)
    app: Mapped[str] = mapped_column(String(255))
    appname: Mapped[str] = mapped_column(String(255))
    stream_id: Mapped[str] = mapped_column(String(1024))
    # The recorded formats, comma-separated ("mp4", "hls,mp4"): one archive each.
    format: Mapped[str] = mapped_column(String(32))
    # open | settling | stitching | archived | suspect | failed | merged
    status: Mapped[str] = mapped_column(String(16))
    # Declared by the app (POST /v1/broadcasts): its span is fixed, not grown by gaps.
    declared: Mapped[bool] = mapped_column(Boolean, default=False)
    # A declared window for one recorded format takes only that format's fragments (None: any).
    window_format: Mapped[str | None] = mapped_column(String(8))
    version: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float] = mapped_column(Float)
    last_callback_at: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    merged_into: Mapped[str | None] = mapped_column(String(32))
    # Retry bookkeeping for transient faults (downloads, storage).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    first_failure_at: Mapped[float | None] = mapped_column(Float)
    next_attempt_at: Mapped[float | None] = mapped_column(Float)
    enqueued_at: Mapped[float | None] = mapped_column(Float)
    # A worker holds the lease while it stitches, and renews it.
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)

    fragments: Mapped[list[Fragment]] = relationship(
        back_populates="broadcast", order_by="(Fragment.start, Fragment.id)"
    )
    archives: Mapped[list[Archive]] = relationship(
        back_populates="broadcast", order_by="(Archive.version, Archive.format)"
    )


class Fragment(Base):
    __tablename__ = "fragments"
    __table_args__ = (Index("ix_fragments_stream_start", "stream_id", "start"), Index("ix_fragments_event", "event_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_key: Mapped[str] = mapped_column(String(300), unique=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"))
    broadcast_id: Mapped[str | None] = mapped_column(ForeignKey("broadcasts.id"), index=True)
    app: Mapped[str] = mapped_column(String(255))
    appname: Mapped[str] = mapped_column(String(255))
    stream_id: Mapped[str] = mapped_column(String(1024))
    format: Mapped[str] = mapped_column(String(8))
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    duration: Mapped[float] = mapped_column(Float)
    file_size: Mapped[int | None] = mapped_column(BigInteger)
    url: Mapped[str] = mapped_column(Text)
    session_id: Mapped[str | None] = mapped_column(String(128))
    # False until a provider's untimed file has been probed for its duration.
    timed: Mapped[bool] = mapped_column(Boolean, default=True)
    received_at: Mapped[float] = mapped_column(Float)
    # Filled once, when the file is first downloaded: ffprobe facts and checksum.
    probe: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    # Why the last stitch could not use this fragment (broken, wrong size, ...).
    error: Mapped[str | None] = mapped_column(Text)

    broadcast: Mapped[Broadcast | None] = relationship(back_populates="fragments")


class Archive(Base):
    __tablename__ = "archives"
    __table_args__ = (UniqueConstraint("broadcast_id", "version", "format"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    broadcast_id: Mapped[str] = mapped_column(ForeignKey("broadcasts.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(8))
    # "verified", or "suspect: <reason>" when publishing unverified archives is allowed.
    verification: Mapped[str] = mapped_column(Text, default="verified")
    key: Mapped[str] = mapped_column(Text)
    manifest_key: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    duration: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)

    broadcast: Mapped[Broadcast] = relationship(back_populates="archives")


class Job(Base):
    """A batch: re-stitch a time range, or import a fragment list. Its id derives from its inputs."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    dry_run: Mapped[bool] = mapped_column(Boolean)
    params: Mapped[str] = mapped_column(Text)  # the normalized request, JSON
    # queued | running | failed; "done" is derived from the broadcasts' progress
    status: Mapped[str] = mapped_column(String(16))
    proposal: Mapped[str | None] = mapped_column(Text)  # dry run: the broadcasts that would be formed
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    updated_at: Mapped[float] = mapped_column(Float)


class JobBroadcast(Base):
    """A broadcast a job stitches; done once its version passes ``base_version``."""

    __tablename__ = "job_broadcasts"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    broadcast_id: Mapped[str] = mapped_column(ForeignKey("broadcasts.id"), primary_key=True)
    base_version: Mapped[int] = mapped_column(Integer)
