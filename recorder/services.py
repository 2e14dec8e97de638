"""What every edge (web, worker, CLI) works with, built once per process from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from recorder.archive import ArchiveStore, open_store
from recorder.config import Settings
from recorder.queue import Publisher
from recorder.store.db import make_engine, make_sessions, migrate
from recorder.store.intake import CallbackWriter


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: ArchiveStore
    publisher: Publisher
    callbacks: CallbackWriter

    @classmethod
    def build(cls, settings: Settings, **extra: object) -> Services:
        """Connect to the database (bringing its schema up to date), storage and broker."""
        engine = make_engine(settings.database_url)
        migrate(engine)
        extra.setdefault("publisher", Publisher(settings))
        sessions = make_sessions(engine)
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            callbacks=CallbackWriter(sessions),
            store=open_store(settings),
            **extra,  # type: ignore[arg-type]
        )
