"""Self-hosted media servers that cannot sign: SRS ``on_dvr`` and nginx-rtmp ``on_record_done``.

Both authenticate with a secret ``?token=`` in the callback URL (any of
``RECORDER_SOURCE_TOKENS``) and report a file path on the server, which
``RECORDER_SOURCE_MEDIA_BASE`` maps to a download URL. Neither says when the
file was recorded, so their fragments are untimed: the worker probes the file,
which ended when its callback arrived. Grouping is by stream name and time gaps.

Also the helpers every non-CSS provider shares: constant-time secret checks,
formats from file extensions, and validation errors that name the field.
"""

from __future__ import annotations

import hashlib
import hmac
import posixpath
from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import parse_qsl, quote

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from recorder.callbacks import Received
from recorder.callbacks.tencent import parse_json_object
from recorder.errors import BadSign, MalformedCallback, first_problem
from recorder.events import FragmentInfo, MediaFormat, Text

M = TypeVar("M", bound=BaseModel)


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must not contain control characters")
    return value


# A label from a callback (an app, room, user or stream name, ...): it becomes part of
# grouping and object keys, so no control characters and no longer than the store's columns.
Label = Annotated[str, Field(max_length=255), AfterValidator(_printable)]
Name = Annotated[Label, Field(min_length=1)]
# A server path or URL: longer than a label, but stored too, so no control characters
# (a NUL stores on SQLite and fails every insert on PostgreSQL) and valid Unicode.
Location = Annotated[Text, Field(max_length=4096)]
# The server's id of the publishing connection: SRS ``client_id`` (a number before SRS 4),
# nginx-rtmp ``clientid``. Letters, digits, ``-`` and ``_`` (no ``:``), so a source key reads one way.
ClientId = Annotated[str, Field(max_length=32, pattern="^[0-9A-Za-z_-]*$", coerce_numbers_to_str=True)]
# Fragment source keys (``<provider>:<client>:<path>``) are at most 300 characters.
MAX_PATH = 255

_EXTENSIONS = {".mp4": MediaFormat.MP4, ".flv": MediaFormat.FLV, ".m3u8": MediaFormat.HLS, ".aac": MediaFormat.AAC}


def matches_any(given: str, secrets: Iterable[str]) -> bool:
    """Compare with every secret in constant time, so timing reveals neither which one matched nor when."""
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(given.encode(), secret.encode())
    return matched


def validate(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise MalformedCallback(first_problem(error, "body")) from None


def media_format(name: str) -> MediaFormat:
    """The format a file's extension names; the stitcher probes the content anyway."""
    fmt = _EXTENSIONS.get(posixpath.splitext(name)[1].lower())
    if fmt is None:
        raise MalformedCallback(f"cannot tell the format of {name!r}: expected .mp4, .flv, .m3u8 or .aac")
    return fmt


def check_token(token: str | None, tokens: tuple[str, ...]) -> None:
    if not tokens:
        raise BadSign("RECORDER_SOURCE_TOKENS is not set: source callbacks are refused")
    if not token:
        raise BadSign("token is missing")
    if not matches_any(token, tokens):
        raise BadSign("token does not match")


def locate(path: str, bases: tuple[tuple[str, str], ...]) -> tuple[str, str]:
    """Normalize a server path and map it to a download URL by the longest prefix it lies below.

    ``..`` is resolved first, so a path can never reach outside the prefix it names.
    """
    normal = PurePosixPath(posixpath.normpath(path))
    matches = [(prefix, base) for prefix, base in bases if normal.parent.is_relative_to(prefix)]
    if not matches:
        escaped = [prefix for prefix, _ in bases if PurePosixPath(path).parent.is_relative_to(prefix)]
        if escaped:
            raise MalformedCallback(f"path {path!r} escapes {escaped[0]!r} with '..'")
        raise MalformedCallback(f"path {path!r} is under no RECORDER_SOURCE_MEDIA_BASE prefix")
    prefix, base = max(matches, key=lambda match: len(match[0]))
    relative = normal.relative_to(prefix).parts
    return str(normal), base + "/" + "/".join(quote(part, safe="") for part in relative)


def _received(
    provider: str,
    event_type: str,
    body: str,
    *,
    path: str,
    client: str,
    app: str,
    appname: str,
    stream_id: str,
    bases: tuple[tuple[str, str], ...],
    now: float,
) -> Received:
    fmt = media_format(path)
    normal, url = locate(path, bases)
    if len(normal) > MAX_PATH:
        raise MalformedCallback(f"path is longer than {MAX_PATH} characters")
    # A re-sent callback is one event and one fragment; a new publish that writes the same file
    # again (nginx-rtmp's record_unique off) comes from another client, so it is a new fragment.
    source_key = f"{provider}:{client}:{normal}"
    fragment = FragmentInfo(
        source_key=source_key,
        app=app,
        appname=appname,
        stream_id=stream_id,
        format=fmt,
        start=now,
        end=now,
        duration=0,
        file_size=None,
        url=url,
        timed=False,
    )
    return Received(provider, event_type, hashlib.sha256(source_key.encode()).hexdigest(), body, fragment)


class SrsDvr(BaseModel):
    """SRS ``http_hooks`` ``on_dvr`` (SRS 3-6 docs, "HTTP Callback").

    Relied on: ``action``, ``vhost``, ``app``, ``stream``, ``cwd``, ``file``
    (the DVR file, relative to ``cwd`` unless absolute) and ``client_id`` (the
    publishing connection). Also sent and kept in the stored body: ``ip``,
    ``param``, ``server_id``, ``service_id``, ``stream_url``, ``stream_id``, ``tcUrl``.
    """

    model_config = ConfigDict(extra="allow")

    action: Literal["on_dvr"]
    vhost: Name
    app: Name
    stream: Name
    cwd: Location = ""
    file: Annotated[Location, Field(min_length=1)]
    client_id: ClientId = ""


def receive_srs(
    raw: bytes, *, token: str | None, tokens: tuple[str, ...], bases: tuple[tuple[str, str], ...], now: float
) -> Received:
    """An SRS DVR file: grouped as stream ``stream`` of app ``app`` on vhost ``vhost``."""
    check_token(token, tokens)
    body = validate(SrsDvr, parse_json_object(raw))
    return _received(
        "srs",
        body.action,
        raw.decode(),
        path=posixpath.join(body.cwd, body.file),
        client=body.client_id,
        app=body.vhost,
        appname=body.app,
        stream_id=body.stream,
        bases=bases,
        now=now,
    )


class NginxRecordDone(BaseModel):
    """nginx-rtmp ``on_record_done`` (ngx_rtmp_notify_module, README "on_record_done").

    A form POST; relied on: ``call=record_done``, ``app``, ``name`` (the
    stream), ``path`` (the recorded file), ``clientid`` (the publishing
    connection) and ``recorder`` (the ``recorder`` block's name, empty for the
    application's own ``record``). Also sent and kept in the stored body:
    ``addr``, ``flashver``, ``swfurl``, ``tcurl``, ``pageurl`` and the
    publisher's own arguments.
    """

    model_config = ConfigDict(extra="allow")

    call: Literal["record_done"]
    app: Name
    name: Name
    path: Annotated[Location, Field(min_length=1)]
    clientid: ClientId = ""
    recorder: Annotated[Label, Field(max_length=64)] = ""  # short enough to name an app


def _form(raw: bytes) -> tuple[dict[str, str], str]:
    """The form's fields and its text.

    nginx-rtmp writes its own fields first and then appends the publisher's
    arguments as they came (ngx_rtmp_notify_record_done_create), so the first
    value of a field is nginx-rtmp's: a publisher cannot override ``path`` or
    ``name``, and its odd arguments must not cost the recording.
    """
    text = raw.decode("utf-8", errors="replace")
    if "\x00" in text:  # the form is stored as received, and PostgreSQL cannot store a NUL
        raise MalformedCallback("form has a NUL byte")
    form: dict[str, str] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        form.setdefault(key, value)
    return form, text


def receive_nginx_rtmp(
    raw: bytes, *, token: str | None, tokens: tuple[str, ...], bases: tuple[tuple[str, str], ...], now: float
) -> Received:
    """An nginx-rtmp recording: stream ``name`` of application ``app``.

    Each ``recorder`` block records its own series of files (say, audio only),
    so a named recorder is its own app, ``nginx-rtmp-<recorder>``.
    """
    check_token(token, tokens)
    form, text = _form(raw)
    body = validate(NginxRecordDone, form)
    return _received(
        "nginx-rtmp",
        body.call,
        text,
        path=body.path,
        client=body.clientid,
        app=f"nginx-rtmp-{body.recorder}" if body.recorder else "nginx-rtmp",
        appname=body.app,
        stream_id=body.name,
        bases=bases,
        now=now,
    )
