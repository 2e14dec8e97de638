"""Callback providers: each turns an HTTP request into a verified, typed event.

A provider module offers ``receive(...) -> Received`` (verify, then parse; raises
a ``RecorderError`` with the status to answer) and ``parse_stored(body) -> Event``
(the same parse, for the worker, on the body as it was stored). Grouping,
stitching and archiving never know which provider a fragment came from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from recorder.events import Event


@dataclass(frozen=True)
class Received:
    """A verified callback, ready to store."""

    provider: str
    event_type: str
    dedupe_key: str  # content identity: a retry of the same callback has the same key
    body: str  # stored as received
    event: Event


def _parsers() -> dict[str, Callable[[str], Event]]:
    from recorder.callbacks import tencent, trtc

    # SRS and nginx-rtmp report only files, stored as fragments at intake: the worker has nothing to re-parse.
    return {"tencent": tencent.parse_stored, "trtc": trtc.parse_stored}


def parse_stored(provider: str, body: str) -> Event:
    parser = _parsers().get(provider)
    return parser(body) if parser else None
