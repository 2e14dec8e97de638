"""Fragments fetched ahead of their broadcast's stitch, kept on this machine's disk.

A worker fetches and probes each fragment when its callback is handled (pipeline.prefetch), so
that the stitch, once the broadcast settles, finds the file here instead of downloading it. The
copies live in ``<work dir>/fragments``, one per fragment id. Everything here is best effort: a
copy that is missing, changed or dropped only means the stitch fetches the fragment itself.

A copy goes when its broadcast is archived or fails for good (on every machine: the worker that
finished tells the others), or once it is a day old (checked when a worker process starts and at
each prefetch), and prefetching stops short of a full disk.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from recorder.archive import sha256_file
from recorder.fetch import Downloaded

log = logging.getLogger(__name__)

FOLDER = "fragments"  # no pid in the name: clear_scratch, which removes dead processes' work, keeps it
KEPT_FOR = 24 * 3600.0  # seconds; a copy no stitch has taken by then is dropped
DISK_RESERVE = 2 * 1024**3  # bytes; prefetching leaves this much free (or a tenth of the disk, if more)


def folder(work_dir: Path) -> Path:
    path = work_dir / FOLDER
    path.mkdir(parents=True, exist_ok=True)
    return path


def copy_of(work_dir: Path, fragment_id: int, fmt: str) -> Path:
    return work_dir / FOLDER / f"{fragment_id}.{fmt}"


def room_for(work_dir: Path, size: int | None) -> bool:
    """Whether a file of ``size`` bytes fits without eating into the reserve."""
    disk = shutil.disk_usage(folder(work_dir))
    return disk.free - (size or 0) > max(DISK_RESERVE, disk.total // 10)


def keep(work_dir: Path, fragment_id: int, fmt: str, path: Path) -> None:
    """Move a fetched file (in the same work dir, so already counted against the disk's room) into the folder."""
    folder(work_dir)
    os.replace(path, copy_of(work_dir, fragment_id, fmt))


def take(work_dir: Path, fragment_id: int, fmt: str, dest: Path, *, sha256: str | None) -> Downloaded | None:
    """The kept copy, linked at ``dest``, if it is there and still holds the bytes whose hash
    is ``sha256`` (those that were probed); else None, and a changed copy is dropped."""
    if sha256 is None:
        return None
    kept = copy_of(work_dir, fragment_id, fmt)
    try:
        os.link(kept, dest)
    except OSError:  # not fetched on this machine, or dropped meanwhile
        return None
    size, actual = sha256_file(dest)
    if actual == sha256:
        return Downloaded(dest, size, actual)
    log.warning("fragment %s: the prefetched file changed on disk; fetching it again", fragment_id)
    dest.unlink()
    kept.unlink(missing_ok=True)
    return None


def drop(work_dir: Path, fragment_ids: Iterable[int]) -> int:
    """Remove the copies of these fragments; how many there were."""
    here = work_dir / FOLDER
    dropped = 0
    for fragment_id in fragment_ids:
        for path in here.glob(f"{int(fragment_id)}.*"):  # int(): the ids may come from a message
            path.unlink(missing_ok=True)
            dropped += 1
    return dropped


def drop_stale(work_dir: Path, *, now: float | None = None) -> None:
    """Remove copies older than KEPT_FOR (their broadcast was stitched elsewhere, unannounced)."""
    limit = (time.time() if now is None else now) - KEPT_FOR
    for path in folder(work_dir).iterdir():
        try:
            if path.stat().st_mtime < limit:
                path.unlink()
        except FileNotFoundError:  # another process dropped it first
            pass
