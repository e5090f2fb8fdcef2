"""every pending delivery has its row in the queue; the ones behind a head wait there

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 15:20:00.000000

With history in day partitions, "has this call a pending delivery?" and "which one is next?"
asked of `deliveries` probed every day's index. Now the deliveries waiting behind the head of
their call have rows in `delivery_queue` too, with no due time and their sequence number, and
those questions are answered by the queue alone. One head per call stays a unique index, now
over the rows with a due time.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("delivery_queue", sa.Column("seq", sa.BigInteger(), nullable=True))
    op.execute(
        """
        UPDATE delivery_queue q SET seq = d.seq
        FROM deliveries d WHERE d.id = q.delivery_id AND d.created_at = q.delivery_created_at
        """
    )
    op.alter_column("delivery_queue", "seq", nullable=False)
    op.alter_column("delivery_queue", "due_at", nullable=True)
    op.drop_constraint(
        "uq_delivery_queue_subscription_id_call_id", "delivery_queue", type_="unique"
    )
    op.drop_index("ix_delivery_queue_host_due", table_name="delivery_queue")
    op.create_index(
        "uq_delivery_queue_head",
        "delivery_queue",
        ["subscription_id", "call_id"],
        unique=True,
        postgresql_where=sa.text("due_at IS NOT NULL"),
    )
    op.create_index(
        "ix_delivery_queue_call", "delivery_queue", ["subscription_id", "call_id", "seq"]
    )
    op.create_index(
        "ix_delivery_queue_waiting",
        "delivery_queue",
        ["subscription_id", "call_id", "seq"],
        postgresql_where=sa.text("due_at IS NULL"),
    )
    op.create_index(
        "ix_delivery_queue_host_due",
        "delivery_queue",
        ["target_host", "due_at"],
        postgresql_where=sa.text("due_at IS NOT NULL"),
    )
    # The waiting deliveries join the queue behind their heads.
    op.execute(
        """
        INSERT INTO delivery_queue (delivery_id, delivery_created_at, subscription_id, call_id,
                                    target_host, seq, due_at)
        SELECT d.id, d.created_at, d.subscription_id, d.call_id, s.target_host, d.seq, NULL
        FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id
        WHERE d.state = 'pending'
          AND NOT EXISTS (SELECT 1 FROM delivery_queue q WHERE q.delivery_id = d.id)
        """
    )


def downgrade() -> None:
    op.execute("DELETE FROM delivery_queue WHERE due_at IS NULL")
    op.drop_index("ix_delivery_queue_host_due", table_name="delivery_queue")
    op.drop_index("ix_delivery_queue_waiting", table_name="delivery_queue")
    op.drop_index("ix_delivery_queue_call", table_name="delivery_queue")
    op.drop_index("uq_delivery_queue_head", table_name="delivery_queue")
    op.create_index(
        "ix_delivery_queue_host_due", "delivery_queue", ["target_host", "due_at"], unique=False
    )
    op.create_unique_constraint(
        "uq_delivery_queue_subscription_id_call_id",
        "delivery_queue",
        ["subscription_id", "call_id"],
    )
    op.alter_column("delivery_queue", "due_at", nullable=False)
    op.drop_column("delivery_queue", "seq")
