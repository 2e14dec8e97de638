"""Query parameters of the list endpoints, validated by the same models the OpenAPI
document describes: unknown or malformed parameters are a 400, not ignored."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

from flask import request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema
from sqlalchemy import Select
from sqlalchemy.orm import Session

from recorder.errors import BadRequest
from recorder.timeutil import parse_time

MAX_LIMIT = 500
T = TypeVar("T")
Q = TypeVar("Q", bound="PageQuery")

TIME = r"^(\d{1,12}(\.\d+)?|\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)$"


def _time(value: object) -> object:
    if isinstance(value, str):
        try:
            return parse_time(value)
        except ValueError:
            raise ValueError("expected ISO 8601 or UNIX seconds") from None
    return value


Time = Annotated[
    float | None,
    BeforeValidator(_time),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": TIME,
            "description": "ISO 8601 (UTC if no zone) or UNIX seconds",
        }
    ),
]


class PageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(50, ge=1, le=MAX_LIMIT)
    cursor: str | None = Field(None, description="opaque: the next_cursor of the previous page")

    def after(self) -> tuple[Any, Any] | None:
        """The position the cursor points after: (sort value, id)."""
        if not self.cursor:
            return None
        try:
            values = json.loads(base64.urlsafe_b64decode(self.cursor.encode()))
        except ValueError:
            raise BadRequest("cursor is not one this API returned") from None
        if not isinstance(values, list) or len(values) != 2:
            raise BadRequest("cursor is not one this API returned")
        return values[0], values[1]


class FragmentQuery(PageQuery):
    stream_id: str | None = None
    since: Time = None
    until: Time = None


class BroadcastQuery(FragmentQuery):
    stream_prefix: str | None = None
    app: str | None = None
    appname: str | None = None
    format: str | None = None
    status: str | None = None


RequiredTime = Annotated[
    float,
    BeforeValidator(_time),
    WithJsonSchema({"type": ["string", "number"], "description": "ISO 8601 (UTC if no zone) or UNIX seconds"}),
]
M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], data: object, where: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        name = ".".join(map(str, first["loc"])) or where
        message = "unknown parameter" if first["type"] == "extra_forbidden" else first["msg"]
        raise BadRequest(f"{name}: {message.removeprefix('Value error, ')}") from None


def query_args(model: type[Q]) -> Q:
    repeated = [name for name, values in request.args.lists() if len(values) > 1]
    if repeated:
        raise BadRequest(f"{repeated[0]}: give this parameter once")
    return validated(model, request.args.to_dict(), "query")


def json_body(model: type[M]) -> M:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return validated(model, body, "body")


def page(session: Session, query: Select[tuple[T]], *rest: Any) -> tuple[list[T], str | None]:
    """One page of ``query`` (already ordered) and the cursor to the next one."""
    if len(rest) == 1:  # TEMPORARY: the previous signature (query, position)
        return page_compat(session, query, rest[0])
    args, position = rest
    rows = list(session.execute(query.limit(args.limit + 1)).scalars())
    if len(rows) <= args.limit:
        return rows, None
    cursor = json.dumps(list(position(rows[args.limit - 1])))
    return rows[: args.limit], base64.urlsafe_b64encode(cursor.encode()).decode()


# TEMPORARY shims for code written against the previous helpers; removed once callers move to query_args.
def after_arg() -> tuple[Any, Any] | None:
    return PageQuery(cursor=request.args.get("cursor") or None).after()


def page_compat(
    session: Session, query: Select[tuple[T]], position: Callable[[T], Sequence[Any]]
) -> tuple[list[T], str | None]:
    return page(session, query, PageQuery.model_validate({"limit": request.args.get("limit", "50")}), position)
