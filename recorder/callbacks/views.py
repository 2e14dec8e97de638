"""Callback endpoints: verify and parse before any side effect, store, answer, enqueue."""

from __future__ import annotations

import time

from flask import Blueprint, request
from sqlalchemy.exc import SQLAlchemyError

from recorder.app import services
from recorder.callbacks import Received, tencent
from recorder.errors import StoreUnavailable
from recorder.events import FragmentInfo
from recorder.queue import HANDLE_EVENT
from recorder.store import repository
from recorder.store.db import transaction

bp = Blueprint("callbacks", __name__)


def store_and_enqueue(received: Received) -> None:
    """Commit the event (and its fragment) before answering; publish after the commit."""
    svc = services()
    try:
        with transaction(svc.sessions) as session:
            event_id = repository.store_callback(
                session,
                provider=received.provider,
                event_type=received.event_type,
                dedupe_key=received.dedupe_key,
                body=received.body,
                fragment=received.event if isinstance(received.event, FragmentInfo) else None,
                now=time.time(),
            )
    except SQLAlchemyError as error:
        raise StoreUnavailable(f"cannot store the callback: {type(error).__name__}") from error
    if event_id is not None:  # None: a duplicate, already stored and sent
        svc.publisher.send(HANDLE_EVENT, event_id)


@bp.post("/v1/callbacks/tencent")
def tencent_css() -> dict[str, int]:
    settings = services().settings
    raw = request.get_data(cache=False)
    store_and_enqueue(tencent.receive(raw, keys=settings.callback_keys, now=time.time(), skew=settings.clock_skew))
    return {"code": 0}
