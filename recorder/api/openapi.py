"""The OpenAPI document, generated from these models and the views' decorators (spectree).

Views validate their own input (so every error keeps the ``{"code", "error"}``
shape); the models here describe the wire format, and the schema tests check
that every answer matches them.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator
from spectree import Response, SecurityScheme, SecuritySchemeData, SpecTree

from recorder.events import MediaFormat, Text
from recorder.jobs import ImportSpec, StitchSpec
from recorder.queries import RequiredTime


class Error(BaseModel):
    code: int
    error: str


api = SpecTree(
    "flask",
    title="recorder: Tencent Cloud recording callbacks to verified archives",
    version="1",
    mode="strict",  # only the views described here, not /ui pages
    security_schemes=[SecurityScheme(name="bearer", data=SecuritySchemeData(type="http", scheme="bearer"))],
    annotations=False,
    # Our views validate their input themselves and answer 400 with an Error, never spectree's 422.
    validation_error_status=400,
    validation_error_model=Error,
)

TOKEN = {"bearer": []}

bp = Blueprint("openapi", __name__)


@bp.get("/v1/openapi.json")
def openapi_json() -> dict[str, Any]:
    """The document; spectree also serves it with Swagger UI and Redoc under /apidoc/."""
    return api.spec


class Ack(BaseModel):
    code: int


class Gap(BaseModel):
    start: str
    end: str
    seconds: float


class FragmentOut(BaseModel):
    id: int
    source_key: str
    broadcast_id: str | None
    app: str
    appname: str
    stream_id: str
    format: str
    start: str
    end: str
    duration: float
    file_size: int | None
    url: str
    session_id: str | None
    received_at: str
    error: str | None


class ArchiveOut(BaseModel):
    format: str
    verification: str
    key: str
    manifest_key: str
    url: str
    size: int
    sha256: str
    duration: float
    version: int
    created_at: str


class BroadcastOut(BaseModel):
    id: str
    app: str
    appname: str
    stream_id: str
    format: str
    status: str
    version: int
    started_at: str
    ended_at: str
    error: str | None
    declared: bool
    fragments: list[FragmentOut]
    gaps: list[Gap]
    archive: ArchiveOut | None
    archives: list[ArchiveOut]
    merged_into: str | None


class BroadcastList(BaseModel):
    items: list[BroadcastOut]
    next_cursor: str | None


class FragmentList(BaseModel):
    items: list[FragmentOut]
    next_cursor: str | None


class Progress(BaseModel):
    total: int
    done: int
    failed: int
    bytes: int


class JobOut(BaseModel):
    id: str
    kind: str
    status: str
    dry_run: bool
    progress: Progress
    broadcasts: list[dict[str, Any]]
    error: str | None
    created_at: str


class JobList(BaseModel):
    items: list[JobOut]
    next_cursor: str | None


MAX_WINDOW_DAYS = 7


class DeclareWindow(BaseModel):
    """A window the app knows (a class from 9:00 to 9:45): its fragments are one broadcast."""

    model_config = ConfigDict(extra="forbid")

    stream_id: Text = Field(min_length=1, max_length=1024, pattern=r"\S")
    start: RequiredTime
    end: RequiredTime
    app: Text = Field("", max_length=255)
    appname: Text = Field("", max_length=255)
    format: MediaFormat | None = Field(None, description="only this recorded format's fragments")

    @model_validator(mode="after")
    def _ordered(self) -> DeclareWindow:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.end - self.start > MAX_WINDOW_DAYS * 86400:  # a typo in a year must not swallow a stream
            raise ValueError(f"a declared window is at most {MAX_WINDOW_DAYS} days long")
        return self


class JobRequest(RootModel[StitchSpec | ImportSpec]):
    pass


class TencentCallback(BaseModel):
    """A CSS event notification; ``sign = MD5(key + t)``."""

    model_config = ConfigDict(extra="allow")
    event_type: int
    sign: str
    t: int


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str | None = None
    code: int | None = None
    error: str | None = None
    checks: dict[str, str]


def errors(*codes: int) -> dict[str, type[Error]]:
    return {f"HTTP_{code}": Error for code in codes}


def documented(**kwargs: Any) -> Any:
    """Describe a view in the OpenAPI document; its own code validates the input."""
    return api.validate(skip_validation=True, **kwargs)


__all__ = ["Response", "api", "documented", "errors"]
