"""the sweep sends an unhandled event again at most every few minutes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 06:45:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("events", sa.Column("resent_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("resent_at")
