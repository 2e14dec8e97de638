"""Request glue for the query and body models in ``recorder.queries``."""

from __future__ import annotations

from typing import TypeVar

from flask import request
from pydantic import BaseModel

from recorder.errors import BadRequest
from recorder.queries import parse_query, validated

M = TypeVar("M", bound=BaseModel)


def query_args(model: type[M]) -> M:
    repeated = [name for name, values in request.args.lists() if len(values) > 1]
    if repeated:
        raise BadRequest(f"{repeated[0]}: give this parameter once")
    return parse_query(model, request.args.to_dict())


def request_json() -> object:
    """The body parsed as JSON; None if it is not JSON this service reads."""
    try:
        return request.get_json(silent=True)
    except RecursionError:  # nested deeper than the parser goes (silent covers only ValueError)
        return None


def json_body(model: type[M]) -> M:
    body = request_json()
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return validated(model, body, "body")
