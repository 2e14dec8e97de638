"""Group commit for callbacks: request threads hand their callback to one writer thread per
process, which stores whatever has piled up in one transaction and then wakes each request
with its outcome. A commit costs far more than a row, and SQLite takes one writer at a time:
under load, one transaction for many callbacks is what keeps intake near the web server's
own speed. Nothing is answered before its transaction has committed."""

from __future__ import annotations

import logging
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from queue import SimpleQueue

from sqlalchemy.orm import Session, sessionmaker

from recorder.background import Background, next_batch
from recorder.callbacks import Received
from recorder.errors import StoreUnavailable
from recorder.events import FragmentInfo
from recorder.store import repository
from recorder.store.db import transaction

log = logging.getLogger(__name__)

Pending = tuple[Received, float, "Future[int | None]"]


class CallbackWriter:
    def __init__(self, sessions: sessionmaker[Session], *, batch: int = 100, timeout: float = 60) -> None:
        self.sessions = sessions
        self.batch = batch
        self.timeout = timeout
        self._queue: SimpleQueue[Pending] = SimpleQueue()
        self._writer = Background(self._write, name="callback-writer")

    def store(self, received: Received, *, now: float) -> int | None:
        """Commit the callback (and its fragment); its event id, or None if it was stored before.

        Raises what its transaction raised (SQLAlchemyError when the database is down).
        """
        outcome: Future[int | None] = Future()
        self._writer.ensure_running()
        self._queue.put((received, now, outcome))
        try:
            return outcome.result(timeout=self.timeout)
        except FutureTimeout:
            raise StoreUnavailable(f"the database did not commit the callback within {self.timeout:.0f} s") from None

    def _write(self) -> None:
        while True:
            self._commit(next_batch(self._queue, self.batch))

    def _commit(self, pending: list[Pending]) -> None:
        try:
            with transaction(self.sessions) as session:
                event_ids = repository.store_callbacks(session, [_new(received, now) for received, now, _ in pending])
        except Exception as error:
            if len(pending) > 1:  # one bad callback must fail only itself: each alone, then
                for one in pending:
                    self._commit([one])
                return
            # The class only: PostgreSQL's message can quote the failing row, the body with its sign.
            log.warning("could not store a %s callback: %s", pending[0][0].provider, type(error).__name__)
            pending[0][2].set_exception(error)
            return
        for (_, _, outcome), event_id in zip(pending, event_ids, strict=True):
            outcome.set_result(event_id)


def _new(received: Received, now: float) -> repository.NewCallback:
    return repository.NewCallback(
        provider=received.provider,
        event_type=received.event_type,
        dedupe_key=received.dedupe_key,
        body=received.body,
        fragment=received.event if isinstance(received.event, FragmentInfo) else None,
        received_at=now,
    )
