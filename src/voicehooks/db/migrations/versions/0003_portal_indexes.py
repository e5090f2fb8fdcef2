"""customer portal: sessions, and the indexes its pages read through

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 11:30:00.000000

The indexes serve the portal's keyset pages (src/voicehooks/portal/repository.py):
- deliveries of a subscription newest first, by time range, with their state for the
  overview's counts without a visit to the table;
- failed deliveries of a subscription (also the recover statement's rows);
- events of a workspace by call id (the delivery search);
- attempt durations of a subscription by time (the overview's latency percentiles).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "portal_sessions",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("link_hash", sa.LargeBinary(), nullable=False),
        sa.Column("cookie_hash", sa.LargeBinary(), nullable=True),
        sa.Column("organization_id", sa.UUID(), nullable=False),
        sa.Column("workspace_id", sa.UUID(), nullable=False),
        sa.Column("subscription_id", sa.UUID(), nullable=True),
        sa.Column("read_only", sa.Boolean(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_portal_sessions_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_portal_sessions_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_portal_sessions_subscription_id_subscriptions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal_sessions")),
        sa.UniqueConstraint("link_hash", name=op.f("uq_portal_sessions_link_hash")),
        sa.UniqueConstraint("cookie_hash", name=op.f("uq_portal_sessions_cookie_hash")),
    )
    op.create_index(
        op.f("ix_portal_sessions_expires_at"), "portal_sessions", ["expires_at"], unique=False
    )
    op.create_index(
        op.f("ix_portal_sessions_workspace_id"), "portal_sessions", ["workspace_id"], unique=False
    )
    op.create_index(
        op.f("ix_portal_sessions_subscription_id"),
        "portal_sessions",
        ["subscription_id"],
        unique=False,
    )
    op.create_index(
        "ix_deliveries_portal_recent",
        "deliveries",
        ["subscription_id", "created_at", "seq"],
        unique=False,
        postgresql_include=["state"],
    )
    op.create_index(
        "ix_deliveries_portal_failed",
        "deliveries",
        ["subscription_id", "created_at", "seq"],
        unique=False,
        postgresql_where=sa.text("state = 'failed'"),
    )
    op.create_index("ix_events_portal_call", "events", ["workspace_id", "call_id"], unique=False)
    op.create_index(
        "ix_attempts_portal_latency",
        "attempts",
        ["subscription_id", "created_at"],
        unique=False,
        postgresql_include=["duration_ms"],
    )


def downgrade() -> None:
    op.drop_index("ix_attempts_portal_latency", table_name="attempts")
    op.drop_index("ix_events_portal_call", table_name="events")
    op.drop_index("ix_deliveries_portal_failed", table_name="deliveries")
    op.drop_index("ix_deliveries_portal_recent", table_name="deliveries")
    op.drop_index(op.f("ix_portal_sessions_subscription_id"), table_name="portal_sessions")
    op.drop_index(op.f("ix_portal_sessions_workspace_id"), table_name="portal_sessions")
    op.drop_index(op.f("ix_portal_sessions_expires_at"), table_name="portal_sessions")
    op.drop_table("portal_sessions")
