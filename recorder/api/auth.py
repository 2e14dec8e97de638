"""Bearer tokens: ``<token>`` may act, ``<token>:read`` may only read."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import request

from recorder.app import services
from recorder.errors import Forbidden, Unauthorized

F = TypeVar("F", bound=Callable[..., Any])


def known(token: str, tokens: frozenset[str]) -> bool:
    matched = False
    for candidate in tokens:  # constant time per candidate, and all are tried
        matched |= hmac.compare_digest(candidate.encode(), token.encode())
    return matched


def require_token(*, admin: bool = False) -> Callable[[F], F]:
    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            settings = services().settings
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token or not known(token.strip(), settings.read_tokens):
                raise Unauthorized("a valid bearer token is required (Authorization: Bearer <token>)")
            if admin and not known(token.strip(), settings.admin_tokens):
                raise Forbidden("this token is read-only; the action needs an admin token")
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
