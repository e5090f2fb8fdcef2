"""the portal's hourly figures per subscription (voicehooks.portal.rollups)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 15:00:00.000000

A cache of what deliveries and attempts say, per subscription and hour: the overview and the
success rates read a day from it instead of counting every delivery of the day.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "delivery_hours",
        sa.Column("subscription_id", sa.UUID(), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("succeeded", sa.BigInteger(), nullable=False),
        sa.Column("failed", sa.BigInteger(), nullable=False),
        sa.Column("pending", sa.BigInteger(), nullable=False),
        sa.Column("latency", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_delivery_hours_subscription_id_subscriptions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("subscription_id", "hour", name=op.f("pk_delivery_hours")),
    )


def downgrade() -> None:
    op.drop_table("delivery_hours")
