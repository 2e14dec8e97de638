"""Fragments fetched ahead of their broadcast's stitch, kept on this machine's disk.

A worker fetches and probes each fragment when its callback is handled (pipeline.prefetch), so
that the stitch, once the broadcast settles, finds the file here instead of downloading it. The
copies live in ``<work dir>/fragments``, one per fragment id: a file, or for an HLS playlist a
folder (fetch.download_hls's copy). Everything here is best effort: a copy that is missing,
changed or dropped only means the stitch fetches the fragment itself.

A copy goes when its broadcast is archived or fails for good (on every machine: the worker that
finished tells the others), or once it is a day old (checked when a worker process starts and at
each prefetch), and prefetching stops short of a full disk.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from recorder.archive import sha256_file
from recorder.fetch import HLS_INDEX, Downloaded, hls_copy_digest

log = logging.getLogger(__name__)

FOLDER = "fragments"  # no pid in the name: clear_scratch, which removes dead processes' work, keeps it
KEPT_FOR = 24 * 3600.0  # seconds; a copy no stitch has taken by then is dropped
DISK_RESERVE = 2 * 1024**3  # bytes; prefetching leaves this much free (or a tenth of the disk, if more)


def folder(work_dir: Path) -> Path:
    path = work_dir / FOLDER
    path.mkdir(parents=True, exist_ok=True)
    return path


def name_of(fragment_id: int, fmt: str) -> str:
    """A fragment's file (or HLS folder) name, here and in a stitch's scratch dir."""
    return f"{fragment_id}.{fmt}"


def copy_of(work_dir: Path, fragment_id: int, fmt: str) -> Path:
    return work_dir / FOLDER / name_of(fragment_id, fmt)


def room(work_dir: Path) -> int:
    """Bytes a prefetch may still fill without eating into the reserve (0 or less: none)."""
    disk = shutil.disk_usage(folder(work_dir))
    return disk.free - max(DISK_RESERVE, disk.total // 10)


def keep(work_dir: Path, fragment_id: int, fmt: str, fetched: Path) -> None:
    """Move a fetched file, or an HLS copy's folder, into the folder (it is in the same work dir,
    so already counted against the disk's room). A second copy of the same fragment (a prefetch
    delivered twice) replaces a file, while a folder kept meanwhile stays: take() checks
    whichever copy is there."""
    folder(work_dir)
    try:
        os.replace(fetched, copy_of(work_dir, fragment_id, fmt))
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):  # a folder with files cannot be replaced
            raise
        log.info("fragment %s: a copy is kept already", fragment_id)


def take(work_dir: Path, fragment_id: int, fmt: str, dest: Path, *, sha256: str | None) -> Downloaded | None:
    """The kept copy, linked at ``dest`` (for HLS: a folder of links), if it is there and still
    holds the bytes whose hash is ``sha256`` (those that were probed); else None, and a changed
    or broken copy is dropped."""
    if sha256 is None:
        return None
    kept = copy_of(work_dir, fragment_id, fmt)
    try:
        if fmt == "hls":
            shutil.copytree(kept, dest, copy_function=os.link)
        else:
            os.link(kept, dest)
    except OSError:  # not fetched on this machine, or dropped meanwhile
        _remove(dest)
        return None
    path = dest / HLS_INDEX if fmt == "hls" else dest
    try:
        size, actual = hls_copy_digest(path) if fmt == "hls" else sha256_file(path)
    except (OSError, ValueError):  # a file of the copy is gone, or its playlist names others
        size, actual = 0, ""
    if actual == sha256:
        return Downloaded(path, size, actual)
    log.warning("fragment %s: the prefetched copy changed on disk; fetching it again", fragment_id)
    _remove(dest)
    _remove(kept)
    return None


def drop(work_dir: Path, fragment_ids: Iterable[int]) -> int:
    """Remove the copies of these fragments; how many there were."""
    here = work_dir / FOLDER
    dropped = 0
    for fragment_id in fragment_ids:
        for path in here.glob(f"{int(fragment_id)}.*"):  # int(): the ids may come from a message
            _remove(path)
            dropped += 1
    return dropped


def drop_stale(work_dir: Path, *, now: float | None = None) -> None:
    """Remove copies older than KEPT_FOR (their broadcast was stitched elsewhere, unannounced)."""
    limit = (time.time() if now is None else now) - KEPT_FOR
    for path in folder(work_dir).iterdir():
        try:
            if path.stat().st_mtime < limit:
                _remove(path)
        except FileNotFoundError:  # another process dropped it first
            pass


def _remove(path: Path) -> None:
    """Remove a copy, file or folder, if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            log.warning("could not remove all of %s", path)
    else:
        path.unlink(missing_ok=True)
