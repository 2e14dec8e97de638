"""Typed errors. Each carries the HTTP status its edge answers with and a reason."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class RecorderError(Exception):
    status = 500
    code = 1

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MalformedCallback(RecorderError):
    status = 400
    code = 400


class BadSign(RecorderError):
    status = 401
    code = 401


class ExpiredSign(BadSign):
    pass


class BodyTooLarge(RecorderError):
    status = 413
    code = 413


class StoreUnavailable(RecorderError):
    status = 503
    code = 503


class BadRequest(RecorderError):
    status = 400
    code = 400


class Unauthorized(RecorderError):
    status = 401
    code = 401


class Forbidden(RecorderError):
    status = 403
    code = 403


class NotFound(RecorderError):
    status = 404
    code = 404


class FetchError(RecorderError):
    """A fragment could not be downloaded. ``permanent`` errors are not retried."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent


class StitchError(RecorderError):
    """ffmpeg or ffprobe failed, or the output did not verify. Never retried."""

    def __init__(self, reason: str, *, cmd: list[str] | None = None, stderr: str = "") -> None:
        super().__init__(reason)
        self.cmd = cmd or []
        self.stderr = stderr


class StorageError(RecorderError):
    """Object storage refused or failed; retried with backoff."""


def first_problem(error: ValidationError, where: str = "") -> str:
    """A validation error's first problem, as ``field: what is wrong`` (``where`` when no field is to blame)."""
    first = error.errors()[0]
    name = ".".join(map(str, first["loc"])) or where
    message = "unknown parameter" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
    return f"{name}: {message}" if name else message
