"""Alembic environment: runs on the connection handed over by ``store.db.migrate``,
or on ``RECORDER_DATABASE_URL`` when alembic is run by hand."""

from alembic import context
from sqlalchemy.engine import Connection

from recorder.store.models import Base


def run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


given = context.config.attributes.get("connection")
if given is not None:
    run(given)
else:
    from recorder.config import Settings
    from recorder.store.db import make_engine

    with make_engine(Settings().database_url).begin() as connection:
        run(connection)
