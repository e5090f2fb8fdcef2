"""The queue's upkeep: calls left without a queued delivery, and retention."""

import asyncpg

from voicehooks.db.engine import rows_affected
from voicehooks.queue.order import QUEUE_HEADS

# The backstop of the release in `results`: a delivery stored while the one before it in its
# call was finishing (neither saw the other) waits with no queued delivery ahead of it. Only
# waiting deliveries are read (ix_deliveries_waiting).
_QUEUE_STRANDED = f"""
WITH to_queue AS (
    SELECT d.id AS delivery_id, d.subscription_id, d.call_id, s.target_host, d.seq
    FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id
    WHERE d.state = 'pending' AND d.next_attempt_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM delivery_queue q
                      WHERE q.subscription_id = d.subscription_id AND q.call_id = d.call_id)
), queued AS ({QUEUE_HEADS})
UPDATE deliveries d SET next_attempt_at = now()
FROM queued WHERE d.id = queued.delivery_id
"""  # noqa: S608 -- composed of constants

# Retention walks events by age (ix_events_created_at) and reaches deliveries through
# ix_deliveries_event_id; attempts go with their delivery (ON DELETE CASCADE).
_PURGE = {
    "deliveries": """
        DELETE FROM deliveries WHERE id IN (
            SELECT d.id FROM events e JOIN deliveries d ON d.event_id = e.id
            WHERE e.created_at < now() - make_interval(secs => $1) AND d.state <> 'pending'
            LIMIT $2)
    """,
    "events": """
        DELETE FROM events WHERE id IN (
            SELECT e.id FROM events e
            WHERE e.created_at < now() - make_interval(secs => $1)
              AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
            LIMIT $2)
    """,
}


async def queue_stranded(connection: asyncpg.Connection) -> int:
    return rows_affected(await connection.execute(_QUEUE_STRANDED))


async def purge_older_than(
    connection: asyncpg.Connection, seconds: float, batch: int = 1000, max_batches: int = 100
) -> dict[str, int]:
    """Delete old final deliveries (with their attempts) and events in short batches."""
    deleted: dict[str, int] = {}
    for table, statement in _PURGE.items():
        deleted[table] = 0
        for _ in range(max_batches):
            count = rows_affected(await connection.execute(statement, seconds, batch))
            deleted[table] += count
            if count < batch:
                break
    return deleted
