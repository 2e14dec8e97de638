"""TRTC cloud recording callbacks (Tencent Cloud TRTC docs, "Cloud Recording Callback").

Relied on from the docs: headers ``Sign`` = base64(HMAC-SHA256(callback key, raw
body)) and ``SdkAppId``; body fields ``EventGroupId`` (3: cloud recording),
``EventType``, ``CallbackTs`` (ms) and ``EventInfo`` with ``RoomId`` (string or
number), ``EventTs`` (s), ``EventMsTs`` (ms), ``UserId`` (the recording robot),
``TaskId`` and ``Payload``. Event types: 301 recorder started (``Status`` 0: ok),
302 recorder exited (``LeaveCode``), 303 upload started, 304 HLS index uploaded,
305 HLS upload finished, 306 failover, 307 first HLS slice, 309 image download
error, 310 MP4 file(s) uploaded to cloud storage (``Status``, ``FileList``,
``FileMessage``: ``FileName``, ``UserId``, ``TrackType``, ``MediaId``,
``StartTimeStamp``, ``EndTimeStamp`` in ms), 311 file committed to VOD
(``Status``, ``TencentVod``: the same per-file fields plus ``FileId``,
``VideoUrl``, ``CacheFile``; ``Errmsg`` on failure), 312 VOD task finished.

310 and 311 become fragments, 301 and 302 bound the session; everything else,
and every other event group, is stored and answered 200. HLS in cloud storage
(304-307) grows until the task ends and no event says it is complete, so it is
stored only: record to VOD, or to MP4 files in cloud storage.

``SdkAppId`` is not covered by the Sign; it only labels a body that was signed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from recorder.callbacks import Received
from recorder.callbacks.sources import Label, Location, Name, matches_any, media_format, validate
from recorder.callbacks.tencent import parse_json_object
from recorder.errors import BadSign, ExpiredSign, MalformedCallback
from recorder.events import Event, FragmentInfo, PushSignal, http_url, is_digits
from recorder.timeutil import LATEST

log = logging.getLogger(__name__)

RECORDING_GROUP = 3
STARTED, STOPPED, STORAGE_FILES, VOD_COMMIT = 301, 302, 310, 311
HANDLED = (STARTED, STOPPED, STORAGE_FILES, VOD_COMMIT)
# TRTC retries every 10 s for a minute; a CallbackTs older than this is a replay.
MAX_AGE = 600
_PLACEHOLDER = re.compile(r"\{(SdkAppId|RoomId|TaskId|FileName)\}")


# A time in ms. Like every time we keep, before the year 3000: a later one cannot be shown.
Millis = Annotated[int, Field(ge=0, lt=LATEST * 1000)]


class _Model(BaseModel):
    # Numeric room ids (RoomId 8489) and ids sent as numbers become text.
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)


class Envelope(_Model):
    EventGroupId: int
    EventType: int = Field(ge=0, lt=10**9)  # stored as text in 32 characters
    CallbackTs: Millis
    EventInfo: dict[str, Any]


class RecordedFile(_Model):
    """Per-file fields shared by 310 ``FileMessage`` entries and 311 ``TencentVod``."""

    UserId: Label = ""  # empty for a mixed recording
    TrackType: Label = ""  # audio, video or audio_video
    MediaId: Label = ""  # main, aux, or mix for a mixed recording
    StartTimeStamp: Millis
    EndTimeStamp: Millis


class StorageFile(RecordedFile):
    FileName: Annotated[Name, Field(max_length=160)]  # with the TaskId, a source key of at most 300


class VodFile(RecordedFile):
    FileId: Name
    VideoUrl: Annotated[Location, Field(min_length=1), AfterValidator(http_url)]
    CacheFile: str = ""


class RecordingPayload(_Model):
    # File details are validated only for a successful upload: a failure report is stored as it is.
    Status: int = 0
    FileMessage: list[dict[str, Any]] = []
    TencentVod: dict[str, Any] | None = None


class RecordingInfo(_Model):
    RoomId: Name
    EventTs: float = Field(ge=0, lt=LATEST)
    EventMsTs: Millis | None = None
    UserId: Label = ""  # the recording robot
    TaskId: Annotated[Name, Field(max_length=128)]  # a session id: 128 characters in the store
    Payload: RecordingPayload = Field(default_factory=RecordingPayload)

    @property
    def at(self) -> float:
        return self.EventMsTs / 1000 if self.EventMsTs is not None else self.EventTs


def expected_sign(key: str, raw: bytes) -> str:
    return base64.b64encode(hmac.new(key.encode(), raw, hashlib.sha256).digest()).decode()


def verify_sign(raw: bytes, sign: str | None, keys: tuple[str, ...]) -> None:
    """Raise ``BadSign`` unless one of the keys signed these exact bytes."""
    if not keys:
        raise BadSign("RECORDER_TRTC_KEYS is not set: TRTC callbacks are refused")
    if not sign:
        raise BadSign("Sign header is missing")
    if not matches_any(sign, (expected_sign(key, raw) for key in keys)):
        raise BadSign("Sign does not match")


def check_fresh(callback_ts: int, *, now: float, skew: float) -> None:
    sent = callback_ts / 1000
    if sent < now - MAX_AGE - skew:
        raise ExpiredSign("CallbackTs is older than 10 minutes")
    if sent > now + skew:
        raise ExpiredSign("CallbackTs is in the future")


def stream_of(info: RecordingInfo, file: RecordedFile) -> str:
    """The grouping key of a recorded file.

    A mixed recording (RecordMode 2) names no user on its files: the task is the
    stream, ``<TaskId>``. A single-stream recording (RecordMode 1) names the user
    and the stream (``MediaId`` main or aux): ``<RoomId>_<UserId>_<MediaId>``,
    plus ``_<TrackType>`` when audio and video are recorded to separate files,
    since those never join end to end.
    """
    if not file.UserId:
        return info.TaskId
    parts = [info.RoomId, file.UserId, file.MediaId]
    if file.TrackType not in ("", "audio_video"):
        parts.append(file.TrackType)
    return "_".join(parts)


def _fragment(
    app_id: str, info: RecordingInfo, file: RecordedFile, *, source_key: str, name: str, url: str
) -> FragmentInfo:
    start, end = file.StartTimeStamp / 1000, file.EndTimeStamp / 1000
    if end < start:
        raise MalformedCallback("EndTimeStamp is before StartTimeStamp")
    return FragmentInfo(
        source_key=source_key,
        app=f"trtc-{app_id}",
        appname=info.RoomId,
        stream_id=stream_of(info, file),
        format=media_format(name),
        start=start,
        end=end,
        duration=end - start,
        file_size=None,
        url=url,
        session_id=info.TaskId,
    )


def storage_url(template: str, app_id: str, info: RecordingInfo, file: StorageFile) -> str:
    values = {"SdkAppId": app_id, "RoomId": info.RoomId, "TaskId": info.TaskId, "FileName": file.FileName}
    return _PLACEHOLDER.sub(lambda match: quote(values[match[1]], safe=""), template)


def fragments(app_id: str, event_type: int, info: RecordingInfo, storage: str | None) -> list[FragmentInfo]:
    """The files a 310 or 311 event reports as uploaded (``Status`` 0); none for a failed upload."""
    payload = info.Payload
    if payload.Status != 0:
        return []
    if event_type == VOD_COMMIT and payload.TencentVod is not None:
        vod = validate(VodFile, payload.TencentVod)
        name = urlsplit(vod.VideoUrl).path
        return [_fragment(app_id, info, vod, source_key=f"trtc:{vod.FileId}", name=name, url=vod.VideoUrl)]
    if event_type == STORAGE_FILES and payload.FileMessage:
        if storage is None:
            log.warning("TRTC task %s uploaded files to cloud storage; set RECORDER_TRTC_STORAGE_URL", info.TaskId)
            return []
        files = [validate(StorageFile, entry) for entry in payload.FileMessage]
        return [
            _fragment(
                app_id,
                info,
                file,
                source_key=f"trtc:{info.TaskId}/{file.FileName}",
                name=file.FileName,
                url=storage_url(storage, app_id, info, file),
            )
            for file in files
        ]
    return []


def signal(app_id: str, event_type: int, info: RecordingInfo) -> PushSignal | None:
    """301 and 302 bound the task's recording session, as a push does for CSS.

    Only a mixed recording's stream is the task, so only it stays open between them;
    single-stream files settle by quiet time alone.
    """
    if event_type == STARTED and info.Payload.Status == 0:
        return PushSignal(f"trtc-{app_id}", info.RoomId, info.TaskId, info.TaskId, info.at, live=True)
    if event_type == STOPPED:
        return PushSignal(f"trtc-{app_id}", info.RoomId, info.TaskId, info.TaskId, info.at, live=False)
    return None


def _recording_info(envelope: Envelope) -> RecordingInfo | None:
    if envelope.EventGroupId != RECORDING_GROUP or envelope.EventType not in HANDLED:
        return None
    return validate(RecordingInfo, envelope.EventInfo)


def events(app_id: str, envelope: Envelope, storage: str | None) -> Sequence[Event]:
    """What a callback means: the files it reports, its session signal, or nothing (stored only)."""
    info = _recording_info(envelope)
    if info is None:
        return [None]
    if envelope.EventType in (STORAGE_FILES, VOD_COMMIT):
        return fragments(app_id, envelope.EventType, info, storage) or [None]
    return [signal(app_id, envelope.EventType, info)]


def _app_id(header: str | None) -> str:
    if header is None or not is_digits(header, 20):
        raise MalformedCallback("SdkAppId header is missing or not a number")
    return header


def _dedupe_key(app_id: str, body: dict[str, Any], event: Event) -> str:
    # TRTC re-sends the same event; CallbackTs is left out in case a retry restamps it.
    # A 310 reports several files: each is its own event, told apart by the file.
    part = event.source_key if isinstance(event, FragmentInfo) else ""
    content = {"SdkAppId": app_id, "part": part, **{k: v for k, v in body.items() if k != "CallbackTs"}}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def receive(
    raw: bytes,
    *,
    sign: str | None,
    app_id: str | None,
    keys: tuple[str, ...],
    storage: str | None,
    now: float,
    skew: float,
) -> list[Received]:
    """Verify the Sign over the raw bytes, then parse; one ``Received`` per uploaded file.

    The stored body is ``{"SdkAppId", "body"}`` with the body exactly as received,
    so the worker can tell which application sent it.
    """
    verify_sign(raw, sign, keys)
    body = parse_json_object(raw)
    envelope = validate(Envelope, body)
    check_fresh(envelope.CallbackTs, now=now, skew=skew)
    app_id = _app_id(app_id)
    stored = json.dumps({"SdkAppId": app_id, "body": raw.decode()}, ensure_ascii=False)
    return [
        Received("trtc", str(envelope.EventType), _dedupe_key(app_id, body, event), stored, event)
        for event in events(app_id, envelope, storage)
    ]


def parse_stored(stored: str) -> Event:
    """The session signal of a stored callback: the worker needs nothing else, since
    fragments were stored with their events at intake."""
    outer = json.loads(stored)
    envelope = Envelope.model_validate(json.loads(outer["body"]))
    info = _recording_info(envelope)
    return signal(outer["SdkAppId"], envelope.EventType, info) if info is not None else None
