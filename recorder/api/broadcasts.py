"""Broadcasts and fragments: list, show, declare, stitch."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from recorder import actions, queries
from recorder.api.auth import require_token
from recorder.api.openapi import (
    TOKEN,
    BroadcastList,
    BroadcastOut,
    DeclareWindow,
    FragmentList,
    Response,
    documented,
    errors,
)
from recorder.api.params import json_body, query_args
from recorder.app import services
from recorder.queries import BroadcastQuery, FragmentQuery

bp = Blueprint("broadcasts", __name__)


@bp.get("/v1/broadcasts")
@documented(
    query=BroadcastQuery, resp=Response(HTTP_200=BroadcastList, **errors(400, 401)), security=TOKEN, tags=["broadcasts"]
)
@require_token()
def list_broadcasts() -> dict[str, Any]:
    return queries.list_broadcasts(services(), query_args(BroadcastQuery))


@bp.get("/v1/broadcasts/<broadcast_id>")
@documented(resp=Response(HTTP_200=BroadcastOut, **errors(401, 404)), security=TOKEN, tags=["broadcasts"])
@require_token()
def show_broadcast(broadcast_id: str) -> dict[str, Any]:
    return queries.show_broadcast(services(), broadcast_id)


@bp.post("/v1/broadcasts")
@documented(
    json=DeclareWindow,
    resp=Response(HTTP_201=BroadcastOut, **errors(400, 401, 403, 413)),
    security=TOKEN,
    tags=["broadcasts"],
)
@require_token(admin=True)
def declare_broadcast() -> tuple[dict[str, Any], int]:
    """Declare a window the app knows (a class from 9:00 to 9:45): its fragments are one broadcast."""
    svc = services()
    return queries.show_broadcast(svc, actions.declare(svc, json_body(DeclareWindow))), 201


@bp.post("/v1/broadcasts/<broadcast_id>/stitch")
@documented(resp=Response(HTTP_202=BroadcastOut, **errors(400, 401, 403, 404)), security=TOKEN, tags=["broadcasts"])
@require_token(admin=True)
def stitch_broadcast(broadcast_id: str) -> tuple[dict[str, Any], int]:
    svc = services()
    actions.stitch_now(svc, broadcast_id)
    return queries.show_broadcast(svc, broadcast_id), 202


@bp.get("/v1/fragments")
@documented(
    query=FragmentQuery, resp=Response(HTTP_200=FragmentList, **errors(400, 401)), security=TOKEN, tags=["fragments"]
)
@require_token()
def list_fragments() -> dict[str, Any]:
    return queries.list_fragments(services(), query_args(FragmentQuery))
