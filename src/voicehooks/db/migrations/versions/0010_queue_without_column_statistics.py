"""delivery_queue keeps no column statistics: its plans hang on its row count alone

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 03:40:00.000000

The queue's rows live for seconds, so a sample of them describes a queue that is gone, and
an ANALYZE that finds the queue empty keeps the columns' statistics it had (it has no row to
replace them with). After a busy spell with two hosts and an idle ANALYZE the planner
believed one host's rows are half of a table of no rows, stored in host order, and costed
the claim's ordered walk of a host as reading half the table's pages: a bitmap scan of every
due row and a sort looked cheaper, and read all of them (100,000 rows, 29,000 pages, 100 ms a
claim, instead of 200 rows). Without column statistics the planner costs every path from
the row count alone, and an ordered index walk with LIMIT stays the cheapest whatever that
count is (tests/delivery/test_query_plans.py).

Statistics targets of 0 stop ANALYZE from sampling the columns; changing each column to its
own type removes what was sampled before (ANALYZE would never replace it). The table is the
small hot one: rewriting its indexes takes a moment.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = {
    "delivery_id": "uuid",
    "delivery_created_at": "timestamptz",
    "subscription_id": "uuid",
    "call_id": "text",
    "target_host": "text",
    "seq": "bigint",
    "due_at": "timestamptz",
    "claim_token": "uuid",
}


def upgrade() -> None:
    changes = ", ".join(
        f"ALTER COLUMN {column} SET STATISTICS 0, ALTER COLUMN {column} TYPE {kind}"
        for column, kind in COLUMNS.items()
    )
    op.execute(f"ALTER TABLE delivery_queue {changes}")


def downgrade() -> None:
    changes = ", ".join(f"ALTER COLUMN {column} SET STATISTICS -1" for column in COLUMNS)
    op.execute(f"ALTER TABLE delivery_queue {changes}")
