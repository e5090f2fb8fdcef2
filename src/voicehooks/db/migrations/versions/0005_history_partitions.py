"""history in day partitions: events, deliveries and attempts partitioned by created_at

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 10:00:00.000000

Retention used to DELETE old rows (and vacuum after them); now a day of history is a partition
of each table, dropped whole (voicehooks.db.partitions). Each table is rebuilt partitioned
under a new name, with a partition for every day that holds a row and for every day from the
default retention horizon (30 days back) to a week ahead; the rows are copied (sequence numbers
kept), the old tables dropped and the new ones take their names, constraints and indexes.

Primary keys become (id, created_at). The foreign keys into history go (a partitioned table's
key must include created_at): deliveries.event_id and attempts.delivery_id. The idempotency key
of events, unique (workspace_id, client_id), moves to the plain table `event_keys`.
`delivery_queue` stays plain and learns each queued delivery's created_at.

The downgrade copies the rows back into plain tables; attempts whose delivery is gone (its day
dropped before theirs) have nothing to refer to there and are left out.
"""

from collections.abc import Sequence
from datetime import UTC, date, datetime

import sqlalchemy as sa
from alembic import op

from voicehooks.db.partitions import HISTORY_TABLES, create_partition, days_to_keep

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The service's default retention: the API and the workers extend it to their own at start.
DEFAULT_RETENTION_DAYS = 30

# Indexes of each history table (the same under both layouts).
_INDEXES: dict[str, list[tuple[str, list[str], dict[str, object]]]] = {
    "events": [
        ("ix_events_portal_call", ["workspace_id", "call_id"], {}),
    ],
    "deliveries": [
        (
            "ix_deliveries_call_order",
            ["subscription_id", "call_id", "seq"],
            {"postgresql_where": sa.text("state = 'pending'")},
        ),
        (
            "ix_deliveries_waiting",
            ["seq"],
            {"postgresql_where": sa.text("state = 'pending' AND next_attempt_at IS NULL")},
        ),
        ("ix_deliveries_listing", ["subscription_id", "seq"], {}),
        (
            "ix_deliveries_portal_recent",
            ["subscription_id", "created_at", "seq"],
            {"postgresql_include": ["state"]},
        ),
        (
            "ix_deliveries_portal_failed",
            ["subscription_id", "created_at", "seq"],
            {"postgresql_where": sa.text("state = 'failed'")},
        ),
        ("ix_deliveries_event_id", ["event_id"], {}),
    ],
    "attempts": [
        ("ix_attempts_logs", ["subscription_id", "created_at", "id"], {}),
        (
            "ix_attempts_portal_latency",
            ["subscription_id", "created_at"],
            {"postgresql_include": ["duration_ms"]},
        ),
        ("ix_attempts_delivery_id", ["delivery_id"], {}),
    ],
}

_SUBSCRIPTION_FK = (
    "ALTER TABLE deliveries ADD CONSTRAINT fk_deliveries_subscription_id_subscriptions"
    " FOREIGN KEY (subscription_id) REFERENCES subscriptions (id) ON DELETE CASCADE"
)


def _days_with_rows() -> set[date]:
    selects = " UNION ".join(
        f"SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date AS day FROM {table}"  # noqa: S608
        for table in HISTORY_TABLES
    )
    return {row.day for row in op.get_bind().execute(sa.text(selects))}


def _rebuild(table: str, *, partitioned: bool) -> str:
    """A new, empty table of `table`'s columns; returns its name."""
    new = f"{table}_{'partitioned' if partitioned else 'plain'}"
    layout = " PARTITION BY RANGE (created_at)" if partitioned else ""
    storage = " WITH (fillfactor = 70)" if table == "deliveries" and not partitioned else ""
    op.execute(
        f"CREATE TABLE {new} (LIKE {table} INCLUDING DEFAULTS INCLUDING IDENTITY){layout}{storage}"
    )
    return new


def _copy(table: str, new: str) -> None:
    overriding = " OVERRIDING SYSTEM VALUE" if table == "deliveries" else ""
    op.execute(f"INSERT INTO {new}{overriding} SELECT * FROM {table}")  # noqa: S608
    if table == "deliveries":
        # Sequence numbers go on from where the old table's sequence was, never reused.
        op.execute(
            f"SELECT setval(pg_get_serial_sequence('{new}', 'seq'),"
            " nextval(pg_get_serial_sequence('deliveries', 'seq')), false)"
        )


def _swap(tables: dict[str, str]) -> None:
    for table in reversed(HISTORY_TABLES):  # attempts refer to deliveries, deliveries to events
        op.execute(f"DROP TABLE {table}")
    for table, new in tables.items():
        op.execute(f"ALTER TABLE {new} RENAME TO {table}")


def _create_indexes() -> None:
    for table, indexes in _INDEXES.items():
        for name, columns, options in indexes:
            op.create_index(name, table, columns, unique=False, **options)  # type: ignore[arg-type]


def upgrade() -> None:
    op.create_table(
        "event_keys",
        sa.Column("workspace_id", sa.UUID(), nullable=False),
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "client_id", name=op.f("pk_event_keys")),
    )
    op.execute(
        "INSERT INTO event_keys (workspace_id, client_id, event_id, created_at)"
        " SELECT workspace_id, client_id, id, created_at FROM events WHERE client_id IS NOT NULL"
    )
    op.create_index("ix_event_keys_created_at", "event_keys", ["created_at"], unique=False)

    days = _days_with_rows() | set(days_to_keep(datetime.now(UTC), DEFAULT_RETENTION_DAYS))
    tables = {table: _rebuild(table, partitioned=True) for table in HISTORY_TABLES}
    for table, new in tables.items():
        for day in sorted(days):
            op.execute(create_partition(table, day, parent=new))
        _copy(table, new)
    _swap(tables)
    for table in HISTORY_TABLES:
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY (id, created_at)")
    op.execute(_SUBSCRIPTION_FK)
    _create_indexes()

    op.add_column(
        "delivery_queue",
        sa.Column("delivery_created_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.execute(
        "UPDATE delivery_queue q SET delivery_created_at = d.created_at"
        " FROM deliveries d WHERE d.id = q.delivery_id"
    )
    op.alter_column("delivery_queue", "delivery_created_at", nullable=False)


def downgrade() -> None:
    op.drop_column("delivery_queue", "delivery_created_at")
    tables = {table: _rebuild(table, partitioned=False) for table in HISTORY_TABLES}
    for table, new in tables.items():
        _copy(table, new)
    op.execute(
        "DELETE FROM attempts_plain a"
        " WHERE NOT EXISTS (SELECT 1 FROM deliveries_plain d WHERE d.id = a.delivery_id)"
    )
    _swap(tables)
    for table in HISTORY_TABLES:
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY (id)")
    op.execute(
        "ALTER TABLE events ADD CONSTRAINT uq_events_workspace_id_client_id"
        " UNIQUE (workspace_id, client_id)"
    )
    op.execute(
        "ALTER TABLE deliveries ADD CONSTRAINT fk_deliveries_event_id_events"
        " FOREIGN KEY (event_id) REFERENCES events (id) ON DELETE CASCADE"
    )
    op.execute(
        "ALTER TABLE attempts ADD CONSTRAINT fk_attempts_delivery_id_deliveries"
        " FOREIGN KEY (delivery_id) REFERENCES deliveries (id) ON DELETE CASCADE"
    )
    op.execute(_SUBSCRIPTION_FK)
    _create_indexes()
    op.create_index("ix_events_created_at", "events", ["created_at"], unique=False)
    op.drop_index("ix_event_keys_created_at", table_name="event_keys")
    op.drop_table("event_keys")
