"""a declared window may be for one recorded format

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 06:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("broadcasts", sa.Column("window_format", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("broadcasts") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("window_format")
