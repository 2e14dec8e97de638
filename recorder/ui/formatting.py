"""How the pages write times, durations and sizes (registered as Jinja filters)."""

from __future__ import annotations

from datetime import UTC, datetime

from recorder.present import human_duration, human_size


def utc(ts: float | None, *, seconds: bool = True) -> str:
    """``2025-03-14 09:00:05``: every page shows UTC, the zone archive keys use."""
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def clock(ts: float, *, seconds: bool = True) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S" if seconds else "%H:%M")


duration = human_duration
filesize = human_size
