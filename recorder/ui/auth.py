"""Cookie login for the pages: the API's tokens, never in a URL or a log.

The cookie holds the token itself (HttpOnly, SameSite=Strict, path /ui). Forms
that act carry a CSRF token, an HMAC of the cookie's token under a secret made
when the app is created: before gunicorn forks, so every worker shares it.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, current_app, g, redirect, request, url_for

from recorder.api.auth import known
from recorder.app import services
from recorder.errors import Forbidden, Unauthorized

COOKIE = "recorder_token"
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Viewer:
    admin: bool
    csrf: str


def init_secret(app: Flask) -> None:
    app.extensions.setdefault("recorder_ui_secret", secrets.token_bytes(32))


def csrf_token(token: str) -> str:
    return hmac.new(current_app.extensions["recorder_ui_secret"], token.encode(), "sha256").hexdigest()


def valid(token: str) -> bool:
    return bool(token) and known(token, services().settings.read_tokens)


def viewer() -> Viewer | None:
    """Who the cookie says is looking, or None."""
    token = request.cookies.get(COOKIE, "")
    if not valid(token):
        return None
    return Viewer(admin=known(token, services().settings.admin_tokens), csrf=csrf_token(token))


def login_required(*, admin: bool = False, json: bool = False) -> Callable[[F], F]:
    """Pages redirect to the login form (JSON answers 401); a POST also needs the form's CSRF token."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            who = viewer()
            if who is None:
                if json:
                    raise Unauthorized("log in at /ui/login")
                return redirect(url_for("ui.login", next=request.full_path.rstrip("?")))
            if admin and not who.admin:
                raise Forbidden("this token is read-only; the action needs an admin token")
            sent = request.form.get("csrf", "").encode()  # bytes: compare_digest refuses non-ASCII text
            if request.method == "POST" and not hmac.compare_digest(sent, who.csrf.encode()):
                raise Forbidden("the form was stale or not sent from these pages (CSRF check failed): reload and retry")
            g.viewer = who
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def safe_next(target: str | None) -> str:
    """Only a path under /ui: a login link must not send the operator elsewhere."""
    if target and target.isprintable() and (target == "/ui" or target.startswith(("/ui/", "/ui?"))):
        return target
    return url_for("ui.search")
