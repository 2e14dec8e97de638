"""The worker's steps in one place: handle an event, sweep, and
lease → fetch → probe → stitch → verify → archive → record.

Celery tasks call these functions and nothing else; they hold no Celery state,
so tests and the CLI can run them directly.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
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

from recorder import archive, fetch, jobs, prefetched, stitch
from recorder.callbacks import parse_stored
from recorder.config import Settings
from recorder.errors import FetchError, RecorderError, StitchError, StorageError
from recorder.events import by_preference
from recorder.grouping import Placement, gaps, timeline
from recorder.present import gap_json
from recorder.queue import DROP_PREFETCHED
from recorder.services import Services
from recorder.store import repository
from recorder.store.db import transaction
from recorder.store.models import Archive, Fragment
from recorder.timeutil import iso

log = logging.getLogger(__name__)


@dataclass
class Context(Services):
    """What every step needs, built once per process: the services, plus who and when."""

    allow: fetch.HostAllowlist = field(init=False)
    clock: Callable[[], float] = time.time
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")

    def __post_init__(self) -> None:
        self.allow = fetch.HostAllowlist(self.settings.media_hosts)


def handle_event(ctx: Context, event_id: int) -> bool:
    """Group a stored event's fragment or apply its signal; False if already handled."""
    with ctx.sessions() as session:
        fragment = repository.fragment_of_event(session, event_id)
    if fragment is not None and not fragment.timed:
        _time_by_probe(ctx, fragment)
    with transaction(ctx.sessions) as session:
        event = repository.unhandled_event(session, event_id)
        if event is None:
            return False
        parsed = parse_stored(event.provider, event.body)
        repository.handle_event(session, event, parsed, window=ctx.settings.reconnect_window, now=ctx.clock())
        return True


def _time_by_probe(ctx: Context, fragment: Fragment) -> None:
    """Place an untimed fragment (SRS, nginx-rtmp) on the timeline: it ended when its callback came.

    A transient download error propagates, so the event stays unhandled and is retried.
    """
    with _scratch(ctx, "probe") as work:
        fetched = _fetch_one(ctx, fragment, work)
    duration = fetched.facts.duration if isinstance(fetched, Fetched) else 0.0
    with transaction(ctx.sessions) as session:
        repository.save_timing(session, fragment.id, start=fragment.received_at - duration, duration=duration)


# --- prefetch: each fragment fetched and probed when its callback is handled -----------------


def fragments_to_prefetch(ctx: Context, event_ids: list[int]) -> list[int]:
    if not ctx.settings.prefetch:
        return []
    with ctx.sessions() as session:
        return repository.fragments_to_prefetch(session, event_ids)


def prefetch(ctx: Context, fragment_id: int) -> str:
    """Fetch and probe a grouped fragment now, so that its broadcast's stitch finds it on this
    machine's disk, already probed, instead of downloading it once the broadcast settles; the
    probe, saved with the copy's hash, also spares another machine's stitch the probing.

    Best effort: whatever goes wrong leaves the fragment to its stitch. Returns the outcome.
    """
    work_dir = ctx.settings.work_dir
    with ctx.sessions() as session:
        fragment = repository.fragment_worth_prefetching(session, fragment_id)
    if fragment is None:  # gone, probed already, or its broadcast is being stitched
        return "skipped"
    prefetched.drop_stale(work_dir)
    room = prefetched.room(work_dir)
    if (fragment.file_size or 0) >= room:
        return "no room"
    with _scratch(ctx, "prefetch") as work:
        fetched = _local_name(work, fragment)
        try:
            got = _download(ctx, fragment, fetched, max_bytes=room)  # a playlist's size is not known
            facts = stitch.probe(got.path, fmt=fragment.format)
            prefetched.keep(work_dir, fragment.id, fragment.format, fetched)
        except (FetchError, StitchError, OSError) as error:
            reason = error.reason if isinstance(error, RecorderError) else str(error)
            log.info("fragment %s not prefetched, its stitch fetches it: %s", fragment_id, reason)
            return "failed"
    with transaction(ctx.sessions) as session:
        repository.save_probe(session, fragment.id, probe=json.dumps(facts.to_dict()), sha256=got.sha256)
        waiting = repository.not_yet_stitching(session, fragment.id)
    if not waiting:  # its stitch began meanwhile, fetched it itself, and may be done dropping copies
        prefetched.drop(work_dir, [fragment.id])
    return "fetched"


def _drop_prefetched(ctx: Context, fragment_ids: list[int]) -> None:
    """Their broadcast is done with: drop the fragments' copies here and on every other machine."""
    if fragment_ids:
        prefetched.drop(ctx.settings.work_dir, fragment_ids)
        ctx.publisher.tell_workers(DROP_PREFETCHED, fragment_ids=fragment_ids)


def sweep(ctx: Context) -> repository.SweepWork:
    with transaction(ctx.sessions) as session:
        work = repository.sweep(
            session,
            settle=ctx.settings.settle_seconds,
            lease=ctx.settings.lease_seconds,
            max_attempts=ctx.settings.max_attempts,
            now=ctx.clock(),
        )
    _drop_prefetched(ctx, work.given_up_fragments)
    return work


def queued_jobs(ctx: Context) -> list[str]:
    """Jobs stored but never started (their publish was lost)."""
    with ctx.sessions() as session:
        return jobs.queued_jobs(session, before=ctx.clock() - 5)


def run_job(ctx: Context, job_id: str) -> list[str]:
    """Start a job; returns the broadcasts to stitch (the task fans them out)."""
    try:
        with transaction(ctx.sessions) as session:
            return jobs.start(session, job_id, window=ctx.settings.reconnect_window, now=ctx.clock())
    except RecorderError as error:
        with transaction(ctx.sessions) as session:
            jobs.fail(session, job_id, error.reason, now=ctx.clock())
        return []


class LostLease(Exception):
    """Another worker holds the broadcast now, or it was merged away: stop without storing."""


@dataclass
class _Lease:
    """This worker's lease on a broadcast, renewed in the background while the long work runs."""

    ctx: Context
    broadcast_id: str
    lost: threading.Event = field(default_factory=threading.Event)

    @contextmanager
    def renewed(self) -> Iterator[None]:
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.ctx.settings.lease_seconds / 3):
                try:
                    with transaction(self.ctx.sessions) as session:
                        held = repository.renew_lease(
                            session,
                            self.broadcast_id,
                            owner=self.ctx.owner,
                            lease=self.ctx.settings.lease_seconds,
                            now=self.ctx.clock(),
                        )
                except Exception:
                    log.exception("could not renew the lease on %s", self.broadcast_id)
                    continue
                if not held:
                    self.lost.set()
                    return

        thread = threading.Thread(target=renew, name=f"lease-{self.broadcast_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def check(self) -> None:
        """Between steps: stop once a renewal has found the lease gone."""
        if self.lost.is_set():
            raise LostLease

    def held(self) -> bool:
        with self.ctx.sessions() as session:
            return repository.holds_lease(session, self.broadcast_id, owner=self.ctx.owner, now=self.ctx.clock())

    def check_before_storing(self, key: str) -> None:
        """Right before each put of the archive ``key``: a worker that lost its lease computed the
        same version, hence the same key, as the new holder, and would write over its archive.

        A window remains: a process frozen in the middle of an upload, past its lease, resumes
        and finishes writing after the new holder stored and recorded the same key. Closing it
        would take keys no other attempt can share, which the contract's layout does not allow.
        """
        self.check()
        with self.ctx.sessions() as session:
            if not repository.may_store(session, self.broadcast_id, key, owner=self.ctx.owner, now=self.ctx.clock()):
                self.lost.set()
                raise LostLease


@contextmanager
def _scratch(ctx: Context, name: str) -> Iterator[Path]:
    """A scratch directory in the work dir, named ``<name>-<pid>-*`` so that what a killed
    process leaves behind can be told from the work of live ones."""
    ctx.settings.work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{name}-{os.getpid()}-", dir=ctx.settings.work_dir) as work:
        yield Path(work)


def clear_scratch(work_dir: Path, broadcast_id: str | None = None) -> None:
    """Remove what killed processes left in the work dir (and a broadcast's earlier attempts,
    when its lease is ours). A worker process calls it when it starts, so a pool process that
    replaces a killed one cleans up after it."""
    if not work_dir.is_dir():
        return
    for path in work_dir.iterdir():
        name, _, rest = path.name.partition("-")
        pid = rest.partition("-")[0]
        if path.is_dir() and (name == broadcast_id or (pid.isdigit() and not _alive(int(pid)))):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def stitch_broadcast(ctx: Context, broadcast_id: str) -> str:
    """Stitch and archive one broadcast if it is due and free; returns the outcome."""
    with transaction(ctx.sessions) as session:
        job = repository.acquire_lease(
            session, broadcast_id, owner=ctx.owner, lease=ctx.settings.lease_seconds, now=ctx.clock()
        )
    if job is None:
        return "skipped"
    clear_scratch(ctx.settings.work_dir, broadcast_id)
    lease = _Lease(ctx, broadcast_id)
    try:
        with lease.renewed(), _scratch(ctx, broadcast_id) as work:
            archives = _produce_archives(ctx, job, work, lease)
        with transaction(ctx.sessions) as session:
            status = repository.record_archives(session, job, archives, owner=ctx.owner, now=ctx.clock())
        if status is None:
            return "lost-lease"
        if status != "settling":  # else a fragment came meanwhile, and the next version takes the copies
            _drop_prefetched(ctx, [f.id for f in job.fragments])
        return "archived"
    except (LostLease, OSError) as error:
        # A new holder on this machine clears our scratch (clear_scratch): a file gone from it
        # means the lease went first.
        if isinstance(error, OSError) and lease.held():
            raise
        log.warning("broadcast %s: the lease was lost; stopped without storing", broadcast_id)
        return "lost-lease"
    except (FetchError, StorageError, StitchError) as error:
        transient = isinstance(error, StorageError) or (isinstance(error, FetchError) and not error.permanent)
        log.warning("broadcast %s: %s", broadcast_id, error.reason)
        with transaction(ctx.sessions) as session:
            outcome = repository.record_failure(
                session,
                job,
                error.reason,
                owner=ctx.owner,
                transient=transient,
                retry_for=ctx.settings.retry_seconds,
                now=ctx.clock(),
            )
        if outcome == "failed":
            _drop_prefetched(ctx, [f.id for f in job.fragments])
        return outcome


@dataclass(frozen=True)
class Fetched:
    """A fragment on local disk, with its probe facts; placed on the timeline by its own times."""

    fragment: Fragment
    got: fetch.Downloaded
    facts: stitch.ProbeFacts

    @property
    def source_key(self) -> str:
        return self.fragment.source_key

    @property
    def start(self) -> float:
        return self.fragment.start

    @property
    def end(self) -> float:
        return self.fragment.end


@dataclass(frozen=True)
class Broken:
    """A fragment that cannot be used, and why."""

    fragment: Fragment
    reason: str


def _label(fragment: Fragment) -> str:
    return f"fragment {fragment.id} ({fragment.source_key})"


def _fetch_one(ctx: Context, fragment: Fragment, work: Path) -> Fetched | Broken:
    """Download a fragment and probe it, unless its probe is already known.

    Transient download errors propagate (the broadcast is retried); a fragment
    that is permanently unusable comes back with the reason.
    """
    dest = _local_name(work, fragment)
    try:
        kept = prefetched.take(ctx.settings.work_dir, fragment.id, fragment.format, dest, sha256=fragment.sha256)
        got = kept or _download(ctx, fragment, dest)
        cached = json.loads(fragment.probe) if fragment.probe and fragment.sha256 == got.sha256 else None
        if cached is not None and "discontinuities" in cached:  # probes from older versions lack exact timing
            return Fetched(fragment, got, stitch.ProbeFacts.from_dict(cached))
        facts = stitch.probe(got.path, fmt=fragment.format)
    except (FetchError, StitchError) as error:
        if isinstance(error, FetchError) and not error.permanent:
            raise
        with transaction(ctx.sessions) as session:
            repository.save_fragment_error(session, fragment.id, error.reason)
        return Broken(fragment, f"{_label(fragment)}: {error.reason}")
    with transaction(ctx.sessions) as session:
        repository.save_probe(session, fragment.id, probe=json.dumps(facts.to_dict()), sha256=got.sha256)
    return Fetched(fragment, got, facts)


def _local_name(work: Path, fragment: Fragment) -> Path:
    """Where a fragment is fetched to in ``work``: a file, or for HLS a folder for its copy."""
    return work / prefetched.name_of(fragment.id, fragment.format)


def _download(ctx: Context, fragment: Fragment, dest: Path, *, max_bytes: int | None = None) -> fetch.Downloaded:
    """Fetch a fragment to ``dest`` (its _local_name), whatever its format; at most
    ``max_bytes`` where its size is not known."""
    timeout = ctx.settings.download_timeout
    if fragment.format == "hls":
        return fetch.download_hls(fragment.url, dest, allow=ctx.allow, timeout=timeout, max_bytes=max_bytes)
    return fetch.download(
        fragment.url, dest, allow=ctx.allow, expected_size=fragment.file_size, timeout=timeout, max_bytes=max_bytes
    )


def _produce_archives(ctx: Context, job: repository.StitchJob, work: Path, lease: _Lease) -> list[Archive]:
    """One verified, stored archive per recorded format."""
    if not job.fragments:
        raise StitchError("no fragments were recorded for this broadcast")
    with ThreadPoolExecutor(max_workers=ctx.settings.download_workers) as pool:
        results = list(pool.map(lambda fragment: _fetch_one(ctx, fragment, work), job.fragments))
    fetched = [r for r in results if isinstance(r, Fetched)]
    broken = [r for r in results if isinstance(r, Broken)]
    if broken and (ctx.settings.broken_fragments == "fail" or not fetched):
        raise StitchError("; ".join(b.reason for b in broken))
    formats = by_preference(f.fragment.format for f in fetched)
    return [
        _archive_format(
            ctx,
            job,
            lease,
            [f for f in fetched if f.fragment.format == fmt],
            [b for b in broken if b.fragment.format == fmt],
            work / fmt,
            primary=fmt == formats[0],
        )
        for fmt in formats
    ]


def verify_stitched(settings: Settings, result: stitch.StitchResult, inputs: list[stitch.StitchInput]) -> None:
    """The gate before archiving: ``stitch.verify`` with the tolerances the settings give."""
    stitch.verify(
        result,
        stitch.expected_duration(inputs),
        tolerance=settings.duration_tolerance,
        ratio=settings.duration_tolerance_ratio,
        max_drift=settings.max_join_drift,
    )


CONTENT_TYPES = {
    "mp4": "video/mp4",
    "m4a": "audio/mp4",
    "flv": "video/x-flv",
    "m3u8": "application/vnd.apple.mpegurl",
    "ts": "video/mp2t",
    "m4s": "video/iso.segment",
    "aac": "audio/aac",
    "key": "application/octet-stream",
}


def _archive_format(
    ctx: Context,
    job: repository.StitchJob,
    lease: _Lease,
    fetched: list[Fetched],
    broken: list[Broken],
    work: Path,
    *,
    primary: bool,
) -> Archive:
    """Stitch, verify and store one format's archive. The primary format's key is the
    contract's ``<broadcast_id>-v<n>.<ext>``; another format's is ``<broadcast_id>-v<n>.<format>.<ext>``."""
    settings = ctx.settings
    placements = timeline(fetched)
    used = [p for p in placements if not p.redundant]
    inputs = [
        stitch.StitchInput(
            path=p.fragment.got.path,
            probe=p.fragment.facts,
            label=_label(p.fragment.fragment),
            trim_start=p.trim,
            format=p.fragment.fragment.format,
        )
        for p in used
    ]
    hls_playlist = settings.hls_output == "playlist" and inputs[0].format == "hls"
    ext = stitch.output_extension(inputs, container=settings.output_container, hls_playlist=hls_playlist)
    key = archive.archive_key(
        prefix=ctx.store.prefix,
        app=job.app,
        stream_id=job.stream_id,
        started_at=job.started_at,
        broadcast_id=job.broadcast_id,
        version=job.next_version,
        ext=ext if primary else f"{inputs[0].format}.{ext}",
    )
    lease.check()
    work.mkdir(parents=True, exist_ok=True)
    result = stitch.stitch(
        inputs,
        work / key.rsplit("/", 1)[-1],
        container=settings.output_container,
        hls_playlist=hls_playlist,
        timeout=settings.ffmpeg_timeout,
    )
    verification = "verified"
    try:
        verify_stitched(settings, result, inputs)
    except stitch.VerificationError as error:
        if not settings.publish_suspect:
            raise
        verification = f"suspect: {error.reason}"
    lease.check_before_storing(key)
    stored = ctx.store.put_file(key, result.path, content_type=CONTENT_TYPES[ext])
    folder = key.rsplit("/", 1)[0]
    for extra in result.extra_files:  # HLS playlist mode: segments beside the playlist
        lease.check_before_storing(key)
        ctx.store.put_file(f"{folder}/{extra.name}", extra, content_type=CONTENT_TYPES[extra.suffix[1:]])
    manifest = build_manifest(job, used, placements, broken, result, stored, verification, created_at=ctx.clock())
    lease.check_before_storing(key)
    ctx.store.put_bytes(
        archive.manifest_key(key), json.dumps(manifest, indent=2).encode(), content_type="application/json"
    )
    return Archive(
        broadcast_id=job.broadcast_id,
        version=job.next_version,
        format=inputs[0].format,
        verification=verification,
        key=stored.key,
        manifest_key=archive.manifest_key(key),
        size=stored.size,
        sha256=stored.sha256,
        duration=result.duration,
        created_at=ctx.clock(),
    )


def build_manifest(
    job: repository.StitchJob,
    used: list[Placement[Fetched]],
    placements: list[Placement[Fetched]],
    broken: list[Broken],
    result: stitch.StitchResult,
    stored: archive.StoredObject,
    verification: str,
    *,
    created_at: float,
) -> dict[str, Any]:
    """What an auditor needs to trust the archive: every piece, join, overlap, hole and gap."""
    joins = {id(p): join for p, join in zip(used, result.joins, strict=True)}

    def entry(fragment: Fragment, **facts: Any) -> dict[str, Any]:
        return {
            "source_key": fragment.source_key,
            "url": fragment.url,
            "start": iso(fragment.start),
            "end": iso(fragment.end),
            **facts,
        }

    pieces = [
        entry(
            p.fragment.fragment,
            size=p.fragment.got.size,
            sha256=p.fragment.got.sha256,
            probe=p.fragment.facts.to_dict(),
            **(
                {"offset": j.offset, "duration": j.duration, "trimmed": j.trimmed, "join": j.mode}
                if (j := joins.get(id(p)))
                else {"join": "left out: covered by earlier fragments"}
            ),
        )
        for p in placements
    ] + [entry(b.fragment, join=f"left out: {b.reason}") for b in broken]
    pieces.sort(key=lambda piece: piece["start"])
    used_fragments = [p.fragment.fragment for p in used]
    return {
        "broadcast_id": job.broadcast_id,
        "version": job.next_version,
        "app": job.app,
        "appname": job.appname,
        "stream_id": job.stream_id,
        "format": used_fragments[0].format,
        "started_at": iso(job.started_at),
        "ended_at": iso(job.ended_at),
        "created_at": iso(created_at),
        "archive": {
            "key": stored.key,
            "size": stored.size,
            "sha256": stored.sha256,
            "duration": result.duration,
            "extra_files": [e.name for e in result.extra_files],
        },
        "verification": verification,
        "ffmpeg": {"mode": result.mode, "command": result.command},
        "fragments": pieces,
        "gaps": [gap_json(g) for g in gaps(used_fragments)],
    }
