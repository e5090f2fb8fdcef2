"""One more attempt for finished deliveries (retry, recover); stopping a subscription's work.

A re-queued delivery rejoins the order of its call: if the call has a delivery in the queue,
it waits (and, having the lower sequence, is the next after the head), else it is due now.
"""

import uuid
from datetime import datetime

import asyncpg

from voicehooks.db.engine import rows_affected
from voicehooks.queue.order import QUEUE
from voicehooks.queue.wakeup import cancel_subscriptions

# `$1` selects the deliveries: by id (one) or failed since a time (recover); `days` bounds
# both references to history by $2, so that the planner prunes to those days' partitions
# (the update's join by value alone would be planned over every day's partition).
_REQUEUE = f"""
WITH target AS (
    SELECT d.id AS delivery_id, d.created_at, d.subscription_id, d.call_id, s.target_host, d.seq
    FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id
    WHERE {{selection}}
    FOR UPDATE OF d
), to_queue AS (SELECT * FROM target), {QUEUE}
UPDATE deliveries d SET
    state = 'pending',
    attempts_allowed = d.attempts + 1,
    next_attempt_at = CASE WHEN d.id IN (SELECT delivery_id FROM heads) THEN now() END,
    last_error = NULL,
    updated_at = now()
FROM target
WHERE d.id = target.delivery_id AND d.created_at = target.created_at AND {{days}}
"""  # noqa: S608 -- composed of constants

_REQUEUE_ONE = _REQUEUE.format(
    selection="d.id = $1 AND d.created_at = $2 AND d.state <> 'pending'", days="d.created_at = $2"
)
_REQUEUE_FAILED_SINCE = _REQUEUE.format(
    selection="d.subscription_id = $1 AND d.state = 'failed' AND d.created_at >= $2",
    days="d.created_at >= $2",
)

_STOP = """
WITH unqueued AS (DELETE FROM delivery_queue WHERE subscription_id = ANY($1::uuid[]))
UPDATE deliveries
SET state = 'failed', next_attempt_at = NULL, last_error = $2, updated_at = now()
WHERE subscription_id = ANY($1::uuid[]) AND state = 'pending'
"""


async def requeue_one(
    connection: asyncpg.Connection, delivery_id: uuid.UUID, created_at: datetime
) -> None:
    """Exactly one more attempt of a finished delivery (the row of `delivery_id` created at
    `created_at`), outside the retry schedule."""
    await connection.execute(_REQUEUE_ONE, delivery_id, created_at)


async def requeue_failed_since(
    connection: asyncpg.Connection, subscription_id: uuid.UUID, since: datetime
) -> int:
    return rows_affected(await connection.execute(_REQUEUE_FAILED_SINCE, subscription_id, since))


async def stop(
    connection: asyncpg.Connection, subscription_ids: list[uuid.UUID], error: str
) -> int:
    """Fail the pending deliveries of the subscriptions (deleted or made inactive), and have
    every dispatcher drop what it holds of them when the caller's transaction commits."""
    failed = rows_affected(await connection.execute(_STOP, subscription_ids, error))
    await cancel_subscriptions(connection, subscription_ids)
    return failed
