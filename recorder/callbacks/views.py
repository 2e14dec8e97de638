"""Callback endpoints: parse and verify before any side effect, store, answer, enqueue."""

from __future__ import annotations

import time

from flask import Blueprint, request
from sqlalchemy.exc import SQLAlchemyError

from recorder.app import services
from recorder.callbacks import tencent
from recorder.errors import StoreUnavailable
from recorder.events import FragmentInfo, parse_tencent
from recorder.queue import HANDLE_EVENT
from recorder.store import repository
from recorder.store.db import transaction

bp = Blueprint("callbacks", __name__)


@bp.post("/v1/callbacks/tencent")
def tencent_css() -> dict[str, int]:
    svc = services()
    raw = request.get_data(cache=False)
    body = tencent.parse_json_object(raw)
    if svc.settings.callback_keys:
        tencent.verify_sign(body, svc.settings.callback_keys, now=time.time(), skew=svc.settings.clock_skew)
    event = parse_tencent(body)
    try:
        with transaction(svc.sessions) as session:
            event_id = repository.store_callback(
                session,
                provider="tencent",
                event_type=str(body["event_type"]),
                dedupe_key=tencent.dedupe_key(body),
                body=raw.decode(),
                fragment=event if isinstance(event, FragmentInfo) else None,
                now=time.time(),
            )
    except SQLAlchemyError as error:
        raise StoreUnavailable(f"cannot store the callback: {type(error).__name__}") from error
    if event_id is not None:
        svc.publisher.send(HANDLE_EVENT, event_id)
    return {"code": 0}
