"""Query parameters shared by the list endpoints: times, limits, opaque cursors."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from flask import request
from sqlalchemy import Select
from sqlalchemy.orm import Session

from recorder.errors import BadRequest
from recorder.timeutil import parse_time

MAX_LIMIT = 500
T = TypeVar("T")


def time_arg(name: str) -> float | None:
    value = request.args.get(name)
    if value is None or value == "":
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise BadRequest(f"{name}: expected ISO 8601 or UNIX seconds, got {value!r}") from None


def after_arg() -> tuple[Any, Any] | None:
    """The position a ``cursor`` parameter points after: (sort value, id)."""
    cursor = request.args.get("cursor")
    if not cursor:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except ValueError:
        raise BadRequest("cursor is not one this API returned") from None
    if not isinstance(values, list) or len(values) != 2:
        raise BadRequest("cursor is not one this API returned")
    return values[0], values[1]


def page(
    session: Session, query: Select[tuple[T]], position: Callable[[T], Sequence[Any]]
) -> tuple[list[T], str | None]:
    """One page of ``query`` (already ordered) and the cursor to the next one."""
    value = request.args.get("limit", "50")
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise BadRequest(f"limit: expected an integer from 1 to {MAX_LIMIT}")
    limit = int(value)
    rows = list(session.execute(query.limit(limit + 1)).scalars())
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], base64.urlsafe_b64encode(json.dumps(list(position(rows[limit - 1]))).encode()).decode()
