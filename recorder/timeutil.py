"""Times: UNIX seconds inside, ISO 8601 UTC at the edges."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Times outside 1970..2999 are typos or attacks, and cannot be rendered or stored safely.
LATEST = 32503680000.0


def parse_time(value: str | float | int) -> float:
    """UNIX seconds or ISO 8601 (a time without a zone is taken as UTC)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("not a time")
    if isinstance(value, int) and not -LATEST < value < LATEST:  # float() of a huge int overflows
        raise ValueError("time out of range (1970 to 2999)")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            seconds = moment.timestamp()
    if not 0 <= seconds < LATEST:  # also refuses NaN
        raise ValueError("time out of range (1970 to 2999)")
    return seconds
