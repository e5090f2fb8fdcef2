"""each attempt keeps the request headers it was sent with

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 15:10:00.000000

The portal shows a delivery's attempts with their headers as sent, signatures included (they
are MACs of the body, not keys). Attempts made before this have none.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("attempts", sa.Column("request_headers", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("attempts", "request_headers")
