"""deliveries lose ix_deliveries_waiting: the queue holds the waiting deliveries

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 17:10:00.000000

Since 0008 the deliveries waiting behind the head of their call have rows in
`delivery_queue` (ix_delivery_queue_waiting), and no statement asks `deliveries` for waiting
ones any more. The partial index on them only cost work: an entry for every delivery stored
behind an earlier one of its call (at ingestion, three of four events of a call), and an
index update when it became due.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_deliveries_waiting", table_name="deliveries")


def downgrade() -> None:
    op.create_index(
        "ix_deliveries_waiting",
        "deliveries",
        ["seq"],
        unique=False,
        postgresql_where=sa.text("state = 'pending' AND next_attempt_at IS NULL"),
    )
