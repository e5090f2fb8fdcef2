"""The queue's upkeep: calls left without a queued delivery, and retention.

Retention drops whole days of history (voicehooks.db.partitions), never rows one by one; a
day with a delivery still pending stays, with its events, until that delivery is final.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import asyncpg

from voicehooks.db import partitions
from voicehooks.db.engine import rows_affected
from voicehooks.queue.order import PROMOTE, mark_due

# The backstop of the promotion in `results`: a delivery stored while the head of its call
# was finishing (neither saw the other) waits with no head ahead of it. Only waiting rows are
# read (ix_delivery_queue_waiting).
_QUEUE_STRANDED = f"""
WITH calls AS (
    SELECT DISTINCT w.subscription_id, w.call_id FROM delivery_queue w
    WHERE w.due_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM delivery_queue h
                      WHERE h.subscription_id = w.subscription_id AND h.call_id = w.call_id
                        AND h.due_at IS NOT NULL)
), {PROMOTE}
SELECT delivery_id, delivery_created_at FROM promoted
"""  # noqa: S608 -- composed of constants

# Any fixed number, the same in every worker: one retention round at a time.
RETENTION_LOCK = 0x766F6963_65726574  # "voiceret"

# A day is needed while a delivery of it may still be sent: its row and its event's.
_DAY_IN_USE = """
SELECT EXISTS (SELECT 1 FROM deliveries
               WHERE state = 'pending' AND created_at >= $1 AND created_at < $2)
    OR EXISTS (SELECT 1 FROM delivery_queue
               WHERE delivery_created_at >= $1 AND delivery_created_at < $2)
"""

# Keys of events whose day is gone (ix_event_keys_created_at); in batches, each a short
# transaction of its own.
_TRIM_KEYS = """
DELETE FROM event_keys WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM event_keys WHERE created_at >= $1 AND created_at < $2 LIMIT $3))
"""


async def queue_stranded(connection: asyncpg.Connection) -> int:
    async with connection.transaction():
        return await mark_due(connection, await connection.fetch(_QUEUE_STRANDED))


@dataclass(frozen=True)
class Expired:
    """What a round of retention did: days dropped, days kept for a pending delivery."""

    dropped: list[date]
    kept: list[date]
    keys_trimmed: int


async def expire_history(
    connection: asyncpg.Connection,
    now: datetime,
    retention_days: float,
    *,
    batch: int = 1000,
    max_batches: int = 100,
) -> Expired | None:
    """Drop the days of history wholly older than the retention horizon, unless a pending
    delivery belongs to one; then trim the event keys older than the oldest day left.

    `connection` must not be in a transaction (a partition is detached concurrently, which
    no transaction may hold); the workers take turns under a session-level advisory lock.
    None: another worker is at it."""
    if not await connection.fetchval("SELECT pg_try_advisory_lock($1)", RETENTION_LOCK):
        return None
    try:
        return await _expire(connection, now, retention_days, batch, max_batches)
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", RETENTION_LOCK)


async def _expire(
    connection: asyncpg.Connection,
    now: datetime,
    retention_days: float,
    batch: int,
    max_batches: int,
) -> Expired:
    await partitions.finish_interrupted_detaches(connection)
    expired_before = partitions.horizon(now, retention_days)
    days = sorted(
        {
            day
            for name in await partitions.existing_partitions(connection)
            if (day := partitions.day_of(name)) is not None
        }
    )
    dropped, kept = [], []
    for day in days:
        end = partitions.day_start(day + timedelta(days=1))
        if end > expired_before:
            break
        if await connection.fetchval(_DAY_IN_USE, partitions.day_start(day), end):
            kept.append(day)
            continue
        await partitions.drop_day(connection, day)
        dropped.append(day)
    # The dropped days' keys, and any older than every day left (a round cut short).
    left = [day for day in days if day not in dropped]
    ranges = [
        (partitions.day_start(day), partitions.day_start(day + timedelta(days=1)))
        for day in dropped
    ]
    if left:
        ranges.append((datetime.min.replace(tzinfo=UTC), partitions.day_start(left[0])))
    trimmed = 0
    for start, end in ranges:
        for _ in range(max_batches):
            count = rows_affected(await connection.execute(_TRIM_KEYS, start, end, batch))
            trimmed += count
            if count < batch:
                break
    return Expired(dropped=dropped, kept=kept, keys_trimmed=trimmed)
