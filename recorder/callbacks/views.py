"""Callback endpoints: verify and parse before any side effect, store, answer, enqueue."""

from __future__ import annotations

import time

from flask import Blueprint, request
from sqlalchemy.exc import SQLAlchemyError

from recorder.api.openapi import Ack, Response, TencentCallback, documented, errors
from recorder.app import CALLBACK_BODY_LIMIT, services
from recorder.callbacks import Received, sources, tencent, trtc
from recorder.errors import BodyTooLarge, StoreUnavailable

bp = Blueprint("callbacks", __name__)


def callback_body() -> bytes:
    """The raw body, refused with 413 past the callback limit (chunked bodies too)."""
    raw = request.get_data(cache=False)
    if len(raw) > CALLBACK_BODY_LIMIT:
        raise BodyTooLarge(f"body is over the {CALLBACK_BODY_LIMIT // 1024} KiB callback limit")
    return raw


def store_and_enqueue(received: Received) -> None:
    """Commit the event (and its fragment) before answering; publish after the commit, in the background."""
    svc = services()
    try:
        event_id = svc.callbacks.store(received, now=time.time())
    except SQLAlchemyError as error:
        raise StoreUnavailable(f"cannot store the callback: {type(error).__name__}") from error
    if event_id is not None:  # None: a duplicate, already stored and sent
        svc.publisher.handle_later(event_id)


@bp.post("/v1/callbacks/tencent")
@documented(json=TencentCallback, resp=Response(HTTP_200=Ack, **errors(400, 401, 413, 503)), tags=["callbacks"])
def tencent_css() -> dict[str, int]:
    settings = services().settings
    raw = callback_body()
    store_and_enqueue(tencent.receive(raw, keys=settings.callback_keys, now=time.time(), skew=settings.clock_skew))
    return {"code": 0}


@bp.post("/v1/callbacks/tencent/trtc")
@documented(json=trtc.Envelope, resp=Response(HTTP_200=Ack, **errors(400, 401, 413, 503)), tags=["callbacks"])
def tencent_trtc() -> dict[str, int]:
    """TRTC cloud recording: headers ``Sign`` (base64 HMAC-SHA256 of the body) and ``SdkAppId``."""
    settings = services().settings
    for received in trtc.receive(
        callback_body(),
        sign=request.headers.get("Sign"),
        app_id=request.headers.get("SdkAppId"),
        keys=settings.trtc_keys,
        storage=settings.trtc_storage_url,
        now=time.time(),
        skew=settings.clock_skew,
    ):
        store_and_enqueue(received)
    return {"code": 0}


@bp.post("/v1/callbacks/srs")
@documented(json=sources.SrsDvr, resp=Response("HTTP_200", **errors(400, 401, 413, 503)), tags=["callbacks"])
def srs() -> tuple[str, int, dict[str, str]]:
    """SRS ``on_dvr``, authenticated by ``?token=``; answers the text ``0`` that SRS reads as success."""
    settings = services().settings
    store_and_enqueue(
        sources.receive_srs(
            callback_body(),
            token=request.args.get("token"),
            tokens=settings.source_tokens,
            bases=settings.source_media_base,
            now=time.time(),
        )
    )
    return "0", 200, {"Content-Type": "text/plain"}


@bp.post("/v1/callbacks/nginx-rtmp")
# No body model: spectree documents forms as multipart, and nginx-rtmp posts urlencoded ones.
@documented(resp=Response(HTTP_200=Ack, **errors(400, 401, 413, 503)), tags=["callbacks"])
def nginx_rtmp() -> dict[str, int]:
    """nginx-rtmp ``on_record_done``: an urlencoded form (``call``, ``app``, ``name``, ``path``,
    ``recorder``, ...), authenticated by ``?token=``."""
    settings = services().settings
    store_and_enqueue(
        sources.receive_nginx_rtmp(
            callback_body(),
            token=request.args.get("token"),
            tokens=settings.source_tokens,
            bases=settings.source_media_base,
            now=time.time(),
        )
    )
    return {"code": 0}
