"""Test data: signed callback bodies built from the shared samples."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

from recorder.callbacks.tencent import expected_sign

DATA = Path(__file__).with_name("data")
KEY = "test-callback-key"
ADMIN = "admin-token"
READER = "reader-token"
BUCKET = "archive"


def sample(name: str) -> dict[str, Any]:
    return copy.deepcopy(json.loads((DATA / name).read_text()))


def signed(body: dict[str, Any], *, key: str = KEY, t: int | None = None) -> dict[str, Any]:
    t = int(time.time()) + 600 if t is None else t
    return {**body, "t": t, "sign": expected_sign(key, str(t))}


def record_body(**overrides: Any) -> dict[str, Any]:
    """A signed event_type 100 body built from the shared sample."""
    return signed({**sample("css-record-mp4.json"), **overrides})


def auth(token: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def fragment_body(stream_id: str, file_id: str, start: float, seconds: float = 6, **overrides: Any) -> dict[str, Any]:
    """A signed recording callback for ``seconds`` from ``start``, with no recording session
    (so grouping goes by time alone)."""
    return record_body(
        **{
            "stream_id": stream_id,
            "file_id": file_id,
            "start_time": start,
            "end_time": start + seconds,
            "duration": seconds,
            "start_time_usec": 0,
            "end_time_usec": 0,
            "callback_ext": "{}",
            **overrides,
        }
    )
