"""New deliveries: each the next of its call to send, or waiting behind an earlier one."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from voicehooks.queue.order import QUEUE
from voicehooks.queue.wakeup import wake_dispatchers


@dataclass(frozen=True, slots=True)
class NewDelivery:
    id: uuid.UUID
    event_id: uuid.UUID
    subscription_id: uuid.UUID
    call_id: str


# Only for subscriptions still active, share-locked until commit: a subscription deleted or
# deactivated meanwhile gets no delivery (and stops no queue row it never saw). In one batch,
# deliveries keep the order given (and their event's created_at: now(), the same
# transaction's); all are later than any delivery already stored.
_ENQUEUE = f"""
    WITH live AS (
        SELECT id, target_host FROM subscriptions
        WHERE id = ANY($3::uuid[]) AND status = 'active'
        FOR SHARE
    ), new AS (
        -- Sequence numbers drawn here, in the order given: the queue orders calls by them.
        SELECT given.*, nextval(pg_get_serial_sequence('deliveries', 'seq')) AS seq
        FROM (
            SELECT n.id AS delivery_id, now() AS created_at, n.event_id, n.subscription_id,
                   n.call_id, live.target_host
            FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[])
                 WITH ORDINALITY AS n(id, event_id, subscription_id, call_id, position)
            JOIN live ON live.id = n.subscription_id
            ORDER BY n.position
        ) AS given
    ), to_queue AS (SELECT * FROM new), {QUEUE}
    INSERT INTO deliveries (id, event_id, subscription_id, call_id, seq, next_attempt_at)
    SELECT new.delivery_id, new.event_id, new.subscription_id, new.call_id, new.seq,
           CASE WHEN new.delivery_id IN (SELECT delivery_id FROM heads) THEN now() END
    FROM new
"""  # noqa: S608 -- composed of constants

HOT_STATEMENTS = (_ENQUEUE,)


async def enqueue(connection: asyncpg.Connection, deliveries: Sequence[NewDelivery]) -> None:
    """Store the deliveries, in the caller's transaction, and wake the dispatchers on commit."""
    if not deliveries:
        return
    await connection.execute(
        _ENQUEUE,
        [d.id for d in deliveries],
        [d.event_id for d in deliveries],
        [d.subscription_id for d in deliveries],
        [d.call_id for d in deliveries],
    )
    await wake_dispatchers(connection)
