"""fragments by event: handling an event looks up its fragment, and prefetch its fragments

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 01:55:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_fragments_event", "fragments", ["event_id"])


def downgrade() -> None:
    op.drop_index("ix_fragments_event", table_name="fragments")
