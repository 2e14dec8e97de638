"""Typed events: what a verified callback means, whichever provider sent it.

Tencent CSS bodies are validated with pydantic in lax mode, so numbers sent as
strings are accepted; anything truly malformed raises ``MalformedCallback``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from recorder.errors import MalformedCallback, first_problem
from recorder.timeutil import LATEST


class MediaFormat(StrEnum):
    """In order of preference: a broadcast recorded in several formats is archived in
    each, and the first is its primary archive."""

    MP4 = "mp4"
    FLV = "flv"
    HLS = "hls"
    AAC = "aac"


def by_preference(formats: Iterable[str]) -> list[str]:
    return sorted(set(formats), key=lambda fmt: list(MediaFormat).index(MediaFormat(fmt)))


@dataclass(frozen=True)
class FragmentInfo:
    """A recorded file, provider-agnostic: what grouping and stitching need."""

    source_key: str  # provider-scoped identity, the dedupe key of a fragment
    app: str
    appname: str
    stream_id: str
    format: MediaFormat
    start: float  # UNIX seconds
    end: float
    duration: float
    file_size: int | None
    url: str
    session_id: str | None = None
    # False when the provider could not say when the file was recorded (SRS,
    # nginx-rtmp): the worker probes it, and it ends when its callback arrived.
    timed: bool = True


@dataclass(frozen=True)
class PushSignal:
    """A push started (``live=True``) or was interrupted."""

    app: str
    appname: str
    stream_id: str
    sequence: str
    at: float
    live: bool


@dataclass(frozen=True)
class RecordSignal:
    """Recording status (event 332); ``record_ended`` closes a session."""

    app: str
    appname: str
    stream_id: str
    session_id: str | None
    event: str
    at: float


Event = FragmentInfo | PushSignal | RecordSignal | None


_UNPRINTABLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")  # control characters, lone surrogates


def _text(value: str) -> str:
    """Text we store and show: no control characters, and valid Unicode (no lone surrogates)."""
    if _UNPRINTABLE.search(value):
        raise ValueError("must be printable text (no control characters or lone surrogates)")
    return value


Text = Annotated[str, AfterValidator(_text)]


def is_digits(text: str, most: int) -> bool:
    """1 to ``most`` ASCII digits. ``str.isdigit`` alone also takes "²" (which int() refuses) and
    other scripts' digits, and thousands of digits are refused by int() or overflow a float."""
    return 0 < len(text) <= most and text.isascii() and text.isdigit()


def is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def http_url(value: str) -> str:
    if not is_http_url(value):
        raise ValueError("must be an http(s) URL")
    return value


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)

    appid: int | None = None
    # Text: what we keep in columns and show. The other fields stay in the stored body, JSON
    # text that escapes them: a tab in a pusher's stream_param must not refuse a recording.
    app: Text = Field("", max_length=255)
    appname: Text = Field("", max_length=255)
    stream_id: Text = Field(min_length=1, max_length=1024)


class RecordingFileBody(_Body):
    """Tencent CSS event_type 100."""

    file_id: Text = Field(min_length=1, max_length=256)
    file_format: MediaFormat
    start_time: float = Field(ge=0, lt=LATEST)
    end_time: float = Field(ge=0, lt=LATEST)
    start_time_usec: int = Field(0, ge=0, lt=1_000_000)
    end_time_usec: int = Field(0, ge=0, lt=1_000_000)
    duration: float | None = Field(None, ge=0, lt=LATEST)
    file_size: int | None = Field(None, ge=0, lt=2**63)
    video_url: Text = Field(min_length=1, max_length=4096)
    callback_ext: str | dict[str, Any] | None = None

    @field_validator("file_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value

    @field_validator("file_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("video_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return http_url(value)

    def session_id(self) -> str | None:
        ext = self.callback_ext
        if isinstance(ext, str):
            try:
                ext = json.loads(ext)
            except (ValueError, RecursionError):
                return None  # kept raw in the stored event
        if isinstance(ext, dict) and ext.get("session_id") not in (None, ""):
            try:  # it groups fragments and is stored: PostgreSQL refuses a NUL for ever
                return _text(str(ext["session_id"])[:128])
            except ValueError as error:
                raise ValueError(f"callback_ext.session_id: {error}") from None
        return None

    def to_fragment(self) -> FragmentInfo:
        start = self.start_time + self.start_time_usec / 1e6
        end = self.end_time + self.end_time_usec / 1e6
        if end < start:
            raise ValueError("end_time is before start_time")
        return FragmentInfo(
            source_key=f"tencent:{self.file_id}",
            app=self.app,
            appname=self.appname,
            stream_id=self.stream_id,
            format=self.file_format,
            start=start,
            end=end,
            duration=self.duration if self.duration is not None else end - start,
            file_size=self.file_size,
            url=self.video_url,
            session_id=self.session_id(),
        )


class PushBody(_Body):
    """Tencent CSS event_type 1 (push started) and 0 (push interrupted)."""

    event_type: Literal[0, 1]
    sequence: Text = Field(min_length=1, max_length=128)
    event_time: float = Field(ge=0, lt=LATEST)

    @field_validator("sequence", mode="before")
    @classmethod
    def _seq_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value


class RecordStatusBody(_Body):
    """Tencent CSS event_type 332."""

    domain: Text = Field("", max_length=255)
    record_event: Text = Field(min_length=1, max_length=64)
    session_id: Text | None = Field(None, max_length=128)
    event_time: float = Field(ge=0, lt=LATEST)

    @field_validator("session_id", mode="before")
    @classmethod
    def _session_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value


def tencent_event_type(body: dict[str, Any]) -> int:
    """``event_type``, sent as a number or as digits; stored as ``str()`` of it, in 32 characters."""
    value = body.get("event_type")
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not is_digits(text, 9):
        raise MalformedCallback("event_type: must be an integer of at most 9 digits")
    return int(text)


def parse_tencent(body: dict[str, Any]) -> Event:
    """Turn a verified CSS body into an event; ``None`` for types we only store."""
    event_type = tencent_event_type(body)
    try:
        if event_type == 100:
            return RecordingFileBody.model_validate(body).to_fragment()
        if event_type in (0, 1):
            push = PushBody.model_validate({**body, "event_type": event_type})
            return PushSignal(push.app, push.appname, push.stream_id, push.sequence, push.event_time, event_type == 1)
        if event_type == 332:
            status = RecordStatusBody.model_validate(body)
            return RecordSignal(
                status.app or status.domain,
                status.appname,
                status.stream_id,
                status.session_id,
                status.record_event,
                status.event_time,
            )
        if event_type == 200:
            _Body.model_validate(body)
        return None
    except ValidationError as error:
        raise MalformedCallback(first_problem(error, "body")) from None
    except ValueError as error:
        raise MalformedCallback(str(error)) from None
