"""The Flask app factory: one app for callbacks, the operator API and health."""

from __future__ import annotations

import json
import logging

from flask import Flask, current_app, jsonify
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter

from recorder.bodydeadline import BodyDeadline
from recorder.config import Settings
from recorder.errors import RecorderError
from recorder.queue import Publisher
from recorder.services import Services

log = logging.getLogger(__name__)

CALLBACK_BODY_LIMIT = 64 * 1024


class IdConverter(BaseConverter):
    """Every plain ``<name>`` in a route is a broadcast or job id: what cannot be one is a 404
    before the database sees it (PostgreSQL refuses a NUL in text with an error)."""

    regex = "[A-Za-z0-9_-]{1,64}"


def services() -> Services:
    return current_app.extensions["recorder"]  # type: ignore[no-any-return]


def create_app(settings: Settings | None = None, *, publisher: Publisher | None = None) -> Flask:
    settings = settings or Settings()
    settings.require_callback_keys()

    app = Flask(__name__)
    # One byte over the limit is let through so a chunked body at the limit can be told
    # from one beyond it (werkzeug truncates streams silently); callback_body() refuses it.
    app.config["MAX_CONTENT_LENGTH"] = CALLBACK_BODY_LIMIT + 1
    app.wsgi_app = BodyDeadline(app.wsgi_app, settings.body_timeout)  # type: ignore[method-assign]
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.url_map.converters["default"] = IdConverter
    app.extensions["recorder"] = Services.build(settings, **({"publisher": publisher} if publisher else {}))

    from recorder.api import broadcasts, health, jobs, metrics, openapi
    from recorder.callbacks import views as callbacks
    from recorder.ui import views as ui

    app.register_blueprint(callbacks.bp)
    app.register_blueprint(broadcasts.bp)
    app.register_blueprint(jobs.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(ui.bp)
    app.register_blueprint(openapi.bp)
    openapi.api.register(app)

    @app.errorhandler(RecorderError)
    def _recorder_error(error: RecorderError):  # type: ignore[no-untyped-def]
        return jsonify(code=error.code, error=error.reason), error.status

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):  # type: ignore[no-untyped-def]
        response = error.get_response()  # keeps headers such as Allow on a 405
        response.data = json.dumps({"code": error.code or 500, "error": error.description})
        response.content_type = "application/json"
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):  # type: ignore[no-untyped-def]
        log.exception("unhandled error")
        return jsonify(code=500, error="internal error"), 500

    return app
