"""Liveness and readiness."""

from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import text

from recorder.api.openapi import Health, Ready, Response, documented
from recorder.app import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@documented(resp=Response(HTTP_200=Health), tags=["health"])
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@bp.get("/readyz")
@documented(resp=Response(HTTP_200=Ready, HTTP_503=Ready), tags=["health"])
def readyz():  # type: ignore[no-untyped-def]
    svc = services()
    checks: dict[str, str] = {}
    try:
        with svc.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as error:
        checks["database"] = f"unreachable: {type(error).__name__}"
    try:
        with svc.publisher.celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as error:
        checks["broker"] = f"unreachable: {type(error).__name__}"
    try:
        svc.store.check()
        checks["storage"] = "ok"
    except Exception as error:
        checks["storage"] = f"unreachable: {getattr(error, 'reason', type(error).__name__)}"
    ready = all(value == "ok" for value in checks.values())
    if ready:
        return jsonify(status="ready", checks=checks), 200
    return jsonify(code=503, error="not ready", checks=checks), 503
