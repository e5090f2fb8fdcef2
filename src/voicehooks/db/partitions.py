"""Day partitions of the history tables: created ahead, dropped whole when they expire.

`events`, `deliveries` and `attempts` are partitioned by range of `created_at`, one partition
per UTC day (`events_p20261201` holds 2026-12-01 00:00 UTC up to the next midnight). There is
no DEFAULT partition: a row whose day has no partition is refused, so every process that
writes history (the API, the workers, the migration) creates the days ahead of time.

Retention never deletes rows: a day's partitions leave the table with
`DETACH PARTITION ... CONCURRENTLY` (which only waits for the queries that use them) and are
dropped. A detach interrupted by a crash leaves its partition "detach pending"; `FINALIZE`
completes it.
"""

import asyncio
import contextlib
import re
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, date, datetime, time, timedelta

import asyncpg

from voicehooks.db.outage import DATABASE_ERRORS

# Oldest first: the order in which rows refer to each other (attempts -> deliveries -> events)
# is the reverse, and a day is dropped in that reverse order.
HISTORY_TABLES = ("events", "deliveries", "attempts")
# Days created beyond today: a service whose housekeeping stops keeps writing for a week.
DAYS_AHEAD = 7
# Any fixed number, the same in every process: one creator of partitions at a time.
PARTITIONS_LOCK = 0x766F6963_65706172  # "voicepar"
# Storage parameters live on partitions (a partitioned table takes none). Room on each page
# of deliveries so that recording an attempt (no indexed column changes) is a HOT update.
_STORAGE = {"deliveries": " WITH (fillfactor = 70)"}

_PARTITION_NAME = re.compile(r"^(?P<table>[a-z_]+)_p(?P<day>\d{8})$")


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def day_of(name: str) -> date | None:
    """The day a partition's name names (None for a name that is not a day partition's)."""
    match = _PARTITION_NAME.match(name)
    if match is None:
        return None
    return datetime.strptime(match["day"], "%Y%m%d").replace(tzinfo=UTC).date()


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def create_partition(table: str, day: date, *, parent: str | None = None) -> str:
    """The statement that creates `table`'s partition of `day` (attached to `parent`, by
    default the table itself: the migration builds partitions under a new parent's name)."""
    start, end = day_start(day), day_start(day + timedelta(days=1))
    return (
        f'CREATE TABLE IF NOT EXISTS "{partition_name(table, day)}" '
        f'PARTITION OF "{parent or table}" '
        f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        f"{_STORAGE.get(table, '')}"
    )


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def horizon(now: datetime, retention_days: float) -> datetime:
    """Rows created before this are past retention."""
    return now - timedelta(days=retention_days)


def days_to_keep(now: datetime, retention_days: float) -> list[date]:
    """From the day of the retention horizon to DAYS_AHEAD days after today (UTC)."""
    today = now.astimezone(UTC).date()
    return days_between(
        horizon(now, retention_days).astimezone(UTC).date(), today + timedelta(days=DAYS_AHEAD)
    )


_EXISTING = """
SELECT c.relname FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_class p ON p.oid = i.inhparent
WHERE p.relname = ANY($1::text[]) AND p.relnamespace = c.relnamespace
  AND p.relnamespace = 'public'::regnamespace
"""


async def existing_partitions(connection: asyncpg.Connection) -> set[str]:
    return {row[0] for row in await connection.fetch(_EXISTING, list(HISTORY_TABLES))}


# The tables a history table's foreign keys reference.
_REFERENCED = """
SELECT DISTINCT r.relname FROM pg_constraint c JOIN pg_class r ON r.oid = c.confrelid
WHERE c.contype = 'f' AND c.conrelid = $1::regclass AND c.conparentid = 0
ORDER BY 1
"""


async def ensure_partitions(
    connection: asyncpg.Connection, days: Iterable[date], *, wait: bool = False
) -> int:
    """Create the missing partitions of `days` for every history table; returns how many.

    Under an advisory lock, so that processes starting together do not race on the catalog.
    `wait`: block until another creator is done (the API at start, which must not take a
    request before today's partitions exist); else skip the round if one is busy. Only missing
    partitions are created: a round with nothing to do takes no lock on a table.

    Each partition is created in a transaction of its own (a savepoint in a caller's):
    creating one locks its parent exclusively, and a transaction that held one parent while
    waiting for the next would deadlock with a reader of both that locked them the other way
    round (a claim reads deliveries, then events).
    """
    wanted = sorted(set(days))
    if wait:
        await connection.execute("SELECT pg_advisory_lock($1)", PARTITIONS_LOCK)
    elif not await connection.fetchval("SELECT pg_try_advisory_lock($1)", PARTITIONS_LOCK):
        return 0
    try:
        existing = await existing_partitions(connection)
        missing = [
            (table, day)
            for day in wanted
            for table in HISTORY_TABLES
            if partition_name(table, day) not in existing
        ]
        for table, day in missing:
            async with connection.transaction():
                # A new partition takes its parent's foreign keys, which lock the tables they
                # reference (deliveries: subscriptions) after the parent. Those first, in the
                # order every writer takes them (subscriptions, then deliveries): else a
                # recorder holding the subscriptions and waiting for the deliveries deadlocks.
                for referenced in await connection.fetch(_REFERENCED, table):
                    await connection.execute(
                        f'LOCK TABLE "{referenced[0]}" IN SHARE ROW EXCLUSIVE MODE'
                    )
                await connection.execute(create_partition(table, day))
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", PARTITIONS_LOCK)
    return len(missing)


_DETACH_PENDING = """
SELECT c.relname, p.relname FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_class p ON p.oid = i.inhparent
WHERE i.inhdetachpending AND p.relname = ANY($1::text[])
  AND p.relnamespace = 'public'::regnamespace
"""


async def finish_interrupted_detaches(connection: asyncpg.Connection) -> list[str]:
    """Complete the detaches a crash left half-done, and drop their partitions."""
    finished = []
    for partition, parent in await connection.fetch(_DETACH_PENDING, list(HISTORY_TABLES)):
        await connection.execute(f'ALTER TABLE "{parent}" DETACH PARTITION "{partition}" FINALIZE')
        await connection.execute(f'DROP TABLE IF EXISTS "{partition}"')
        finished.append(partition)
    return finished


async def drop_day(connection: asyncpg.Connection, day: date) -> list[str]:
    """Detach (concurrently: readers and writers of other days go on) and drop one day's
    partitions, attempts first. `connection` must not be in a transaction."""
    existing = await existing_partitions(connection)
    dropped = []
    for table in reversed(HISTORY_TABLES):
        name = partition_name(table, day)
        if name in existing:
            await connection.execute(
                f'ALTER TABLE "{table}" DETACH PARTITION "{name}" CONCURRENTLY'
            )
            dropped.append(name)
        await connection.execute(f'DROP TABLE IF EXISTS "{name}"')
    return dropped


async def create_ahead(connection: asyncpg.Connection, retention_days: float) -> int:
    """Today's partitions and the coming days', before any row needs them (waits its turn)."""
    return await ensure_partitions(
        connection, days_to_keep(datetime.now(UTC), retention_days), wait=True
    )


async def create_ahead_forever(
    acquire: Callable[[], AbstractAsyncContextManager[asyncpg.Connection]],
    retention_days: float,
    interval: float = 3600.0,
) -> None:
    """For a process that writes history without a worker's housekeeping (`voicehooks api`):
    the days ahead never run out, however long it runs."""
    while True:
        await asyncio.sleep(interval)
        # An outage is logged by whoever meets it first; the next round catches up.
        with contextlib.suppress(*DATABASE_ERRORS):
            async with acquire() as connection:
                await create_ahead(connection, retention_days)
