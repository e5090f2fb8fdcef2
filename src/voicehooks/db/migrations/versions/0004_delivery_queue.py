"""the delivery queue: a hot table of the deliveries that may be sent next

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 14:30:00.000000

Claims used to search `deliveries` (every delivery ever made) for due rows that have no
earlier pending delivery of their call, under planner settings that forbade anything but
index walks. Now `delivery_queue` holds one row per call with pending work (the earliest
pending delivery of the call, see voicehooks.queue), and claims read nothing else. The
leases move with it; `deliveries` keeps the record customers see.

Existing pending deliveries are queued as the service would have: per (subscription, call)
the one with the lowest sequence, due when it was due (a waiting one, now).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "delivery_queue",
        sa.Column("delivery_id", sa.UUID(), nullable=False),
        sa.Column("subscription_id", sa.UUID(), nullable=False),
        sa.Column("call_id", sa.Text(), nullable=False),
        sa.Column("target_host", sa.Text(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claim_token", sa.UUID(), nullable=True),
        sa.PrimaryKeyConstraint("delivery_id", name=op.f("pk_delivery_queue")),
        sa.UniqueConstraint(
            "subscription_id", "call_id", name=op.f("uq_delivery_queue_subscription_id_call_id")
        ),
        postgresql_with={"fillfactor": "50"},
    )
    op.create_index(
        "ix_delivery_queue_host_due", "delivery_queue", ["target_host", "due_at"], unique=False
    )
    op.execute(
        """
        INSERT INTO delivery_queue (delivery_id, subscription_id, call_id, target_host, due_at)
        SELECT DISTINCT ON (d.subscription_id, d.call_id)
               d.id, d.subscription_id, d.call_id, s.target_host,
               COALESCE(d.next_attempt_at, now())
        FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id
        WHERE d.state = 'pending'
        ORDER BY d.subscription_id, d.call_id, d.seq
        """
    )
    op.execute(
        """
        UPDATE deliveries d SET next_attempt_at = q.due_at
        FROM delivery_queue q WHERE q.delivery_id = d.id AND d.next_attempt_at IS NULL
        """
    )
    # Waiting deliveries have no due time: those that had one were due behind a queued one.
    op.execute(
        """
        UPDATE deliveries d SET next_attempt_at = NULL
        WHERE d.state = 'pending' AND d.next_attempt_at IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM delivery_queue q WHERE q.delivery_id = d.id)
        """
    )
    op.drop_index("ix_deliveries_due", table_name="deliveries")
    op.drop_column("deliveries", "leased_until")
    op.drop_column("deliveries", "claim_token")


def downgrade() -> None:
    op.add_column("deliveries", sa.Column("claim_token", sa.UUID(), nullable=True))
    op.add_column(
        "deliveries", sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index(
        "ix_deliveries_due",
        "deliveries",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.execute(
        """
        UPDATE deliveries d SET claim_token = q.claim_token, next_attempt_at = q.due_at
        FROM delivery_queue q WHERE q.delivery_id = d.id
        """
    )
    op.drop_index("ix_delivery_queue_host_due", table_name="delivery_queue")
    op.drop_table("delivery_queue")
