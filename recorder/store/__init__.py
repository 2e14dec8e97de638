"""The durable event store: models, engine, migrations and repositories."""
