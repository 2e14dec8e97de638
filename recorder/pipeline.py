"""The worker's steps in one place: handle an event, sweep, and
lease → fetch → probe → stitch → verify → archive → record.

Celery tasks call these functions and nothing else; they hold no Celery state,
so tests and the CLI can run them directly.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from recorder import archive, fetch, stitch
from recorder.config import Settings
from recorder.errors import FetchError, StitchError, StorageError
from recorder.grouping import gaps
from recorder.store import repository
from recorder.store.db import make_engine, make_sessions, migrate, transaction
from recorder.store.models import Archive, Fragment

log = logging.getLogger(__name__)


@dataclass
class Context:
    """What every step needs, built once per process."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: archive.ArchiveStore
    allow: fetch.HostAllowlist
    clock: Callable[[], float] = time.time
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")

    @classmethod
    def build(cls, settings: Settings, *, run_migrations: bool = True) -> Context:
        engine = make_engine(settings.database_url)
        if run_migrations:
            migrate(engine)
        return cls(
            settings=settings,
            engine=engine,
            sessions=make_sessions(engine),
            store=archive.open_store(settings),
            allow=fetch.HostAllowlist(settings.media_hosts),
        )


def handle_event(ctx: Context, event_id: int) -> bool:
    with transaction(ctx.sessions) as session:
        return repository.handle_event(session, event_id, window=ctx.settings.reconnect_window, now=ctx.clock())


def sweep(ctx: Context) -> repository.SweepWork:
    with transaction(ctx.sessions) as session:
        return repository.sweep(
            session, settle=ctx.settings.settle_seconds, lease=ctx.settings.lease_seconds, now=ctx.clock()
        )


@contextmanager
def _lease_renewed(ctx: Context, broadcast_id: str) -> Iterator[None]:
    """Renew the lease in the background while the long work runs."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ctx.settings.lease_seconds / 3):
            try:
                with transaction(ctx.sessions) as session:
                    repository.renew_lease(
                        session, broadcast_id, owner=ctx.owner, lease=ctx.settings.lease_seconds, now=ctx.clock()
                    )
            except Exception:
                log.exception("could not renew the lease on %s", broadcast_id)

    thread = threading.Thread(target=renew, name=f"lease-{broadcast_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def stitch_broadcast(ctx: Context, broadcast_id: str) -> str:
    """Stitch and archive one broadcast if it is due and free; returns the outcome."""
    with transaction(ctx.sessions) as session:
        job = repository.acquire_lease(
            session, broadcast_id, owner=ctx.owner, lease=ctx.settings.lease_seconds, now=ctx.clock()
        )
    if job is None:
        return "skipped"
    ctx.settings.work_dir.mkdir(parents=True, exist_ok=True)
    try:
        with (
            _lease_renewed(ctx, broadcast_id),
            tempfile.TemporaryDirectory(prefix=f"{broadcast_id}-", dir=ctx.settings.work_dir) as work,
        ):
            new_archive = _produce_archive(ctx, job, Path(work))
        with transaction(ctx.sessions) as session:
            recorded = repository.record_archive(session, job, new_archive, owner=ctx.owner, now=ctx.clock())
        return "archived" if recorded else "lost-lease"
    except (FetchError, StorageError, StitchError) as error:
        transient = isinstance(error, StorageError) or (isinstance(error, FetchError) and not error.permanent)
        log.warning("broadcast %s: %s", broadcast_id, error.reason)
        with transaction(ctx.sessions) as session:
            return repository.record_failure(
                session,
                job,
                error.reason,
                owner=ctx.owner,
                transient=transient,
                retry_for=ctx.settings.retry_seconds,
                now=ctx.clock(),
            )


def _fetch_one(ctx: Context, fragment: Fragment, work: Path, index: int) -> tuple[stitch.StitchInput, fetch.Downloaded]:
    """Download a fragment and probe it, unless its probe is already known."""
    label = f"fragment {fragment.id} ({fragment.source_key})"
    dest = work / f"{index:04d}.{fragment.format}"
    if fragment.format == "hls":
        got = fetch.download_hls(
            fragment.url, work / f"{index:04d}", allow=ctx.allow, timeout=ctx.settings.download_timeout
        )
    else:
        got = fetch.download(
            fragment.url, dest, allow=ctx.allow, expected_size=fragment.file_size, timeout=ctx.settings.download_timeout
        )
    if fragment.probe and fragment.sha256 == got.sha256:
        facts = stitch.ProbeFacts.from_dict(json.loads(fragment.probe))
    else:
        try:
            facts = stitch.probe(got.path)
        except StitchError as error:
            raise StitchError(f"{label}: {error.reason}") from error
        with transaction(ctx.sessions) as session:
            repository.save_probe(session, fragment.id, probe=json.dumps(facts.to_dict()), sha256=got.sha256)
    return stitch.StitchInput(path=got.path, probe=facts, label=label), got


def _produce_archive(ctx: Context, job: repository.StitchJob, work: Path) -> Archive:
    with ThreadPoolExecutor(max_workers=ctx.settings.download_workers) as pool:
        fetched = list(pool.map(lambda pair: _fetch_one(ctx, pair[1], work, pair[0]), enumerate(job.fragments)))
    inputs = [piece for piece, _ in fetched]
    ext = stitch.output_extension(inputs)
    result = stitch.stitch(inputs, work / f"out.{ext}", timeout=ctx.settings.ffmpeg_timeout)
    expected = sum(i.probe.duration for i in inputs)
    stitch.verify(
        result, expected, tolerance=ctx.settings.duration_tolerance, ratio=ctx.settings.duration_tolerance_ratio
    )
    key = archive.archive_key(
        prefix=ctx.store.prefix,
        app=job.app,
        stream_id=job.stream_id,
        started_at=job.started_at,
        broadcast_id=job.broadcast_id,
        version=job.next_version,
        ext=ext,
    )
    stored = ctx.store.put_file(key, result.path, content_type="audio/mp4" if ext == "m4a" else "video/mp4")
    manifest = build_manifest(job, fetched, result, stored, created_at=ctx.clock())
    ctx.store.put_bytes(
        archive.manifest_key(key), json.dumps(manifest, indent=2).encode(), content_type="application/json"
    )
    return Archive(
        broadcast_id=job.broadcast_id,
        version=job.next_version,
        key=stored.key,
        manifest_key=archive.manifest_key(key),
        size=stored.size,
        sha256=stored.sha256,
        duration=result.duration,
        created_at=ctx.clock(),
    )


def build_manifest(
    job: repository.StitchJob,
    fetched: list[tuple[stitch.StitchInput, fetch.Downloaded]],
    result: stitch.StitchResult,
    stored: archive.StoredObject,
    *,
    created_at: float,
) -> dict[str, Any]:
    """What an auditor needs to trust the archive: every piece, join and gap."""
    return {
        "broadcast_id": job.broadcast_id,
        "version": job.next_version,
        "app": job.app,
        "appname": job.appname,
        "stream_id": job.stream_id,
        "format": job.format,
        "started_at": job.started_at,
        "ended_at": job.ended_at,
        "created_at": created_at,
        "archive": {"key": stored.key, "size": stored.size, "sha256": stored.sha256, "duration": result.duration},
        "ffmpeg": {"mode": result.mode, "command": result.command},
        "fragments": [
            {
                "source_key": fragment.source_key,
                "url": fragment.url,
                "start": fragment.start,
                "end": fragment.end,
                "size": got.size,
                "sha256": got.sha256,
                "offset": join.offset,
                "duration": join.duration,
                "join": join.mode,
                "probe": piece.probe.to_dict(),
            }
            for fragment, (piece, got), join in zip(job.fragments, fetched, result.joins, strict=True)
        ],
        "gaps": [{"start": g.start, "end": g.end, "seconds": g.seconds} for g in gaps(job.fragments)],
    }
