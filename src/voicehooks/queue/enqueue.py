"""New deliveries: each the next of its call to send, or waiting behind an earlier one."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from voicehooks.queue.order import QUEUE
from voicehooks.queue.wakeup import DELIVERIES_CHANNEL


@dataclass(frozen=True, slots=True)
class NewDelivery:
    id: uuid.UUID
    event_id: uuid.UUID
    subscription_id: uuid.UUID
    call_id: str


# Stores the deliveries given as a CTE named `to_deliver` (delivery_id, event_id,
# subscription_id, call_id, position): a CTE list to splice after `WITH ... ,`, for writers
# that derive their deliveries in the same statement (ingestion stores events and deliveries
# in one).
#
# Only for subscriptions still active, share-locked until commit: a subscription deleted or
# deactivated meanwhile gets no delivery (and stops no queue row it never saw). In one batch,
# deliveries keep the order given (and their event's created_at: now(), the same
# transaction's); all are later than any delivery already stored.
#
# The dispatchers are woken (on commit) by the statement itself when a new delivery is due,
# not by a NOTIFY of its own: one round trip fewer, and a writer whose statement is its
# whole transaction needs no BEGIN and COMMIT either. Its CTE `woken` does it, and runs only
# if read: the statement's final SELECT reads it (`SELECT count(*) FROM woken`).
DELIVER = f"""
    live AS (
        SELECT id, target_host FROM subscriptions
        -- An array, not a join: whatever the estimate of `to_deliver`, a probe of the primary
        -- key per subscription, never a scan of every subscription.
        WHERE id = ANY(ARRAY(SELECT DISTINCT subscription_id FROM to_deliver))
          AND status = 'active'
        FOR SHARE
    ), new AS (
        -- Sequence numbers drawn here, in the order given: the queue orders calls by them.
        -- The sequence is looked up once (a sub-select): pg_get_serial_sequence is only
        -- stable, and per row its catalog lookups cost more than nextval itself.
        SELECT given.*,
               nextval((SELECT pg_get_serial_sequence('deliveries', 'seq')::regclass)) AS seq
        FROM (
            SELECT n.delivery_id, now() AS created_at, n.event_id, n.subscription_id,
                   n.call_id, live.target_host
            FROM to_deliver AS n
            JOIN live ON live.id = n.subscription_id
            ORDER BY n.position
        ) AS given
    ), to_queue AS (SELECT * FROM new), {QUEUE}, delivered AS (
        INSERT INTO deliveries (id, event_id, subscription_id, call_id, seq, next_attempt_at)
        SELECT new.delivery_id, new.event_id, new.subscription_id, new.call_id, new.seq,
               CASE WHEN new.delivery_id IN (SELECT delivery_id FROM heads) THEN now() END
        FROM new
    ), woken AS (
        SELECT pg_notify('{DELIVERIES_CHANNEL}', '') WHERE EXISTS (SELECT FROM heads)
    )
"""  # noqa: S608 -- composed of constants

_ENQUEUE = f"""
    WITH to_deliver AS (
        SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[]) WITH ORDINALITY
             AS n(delivery_id, event_id, subscription_id, call_id, position)
    ), {DELIVER}
    SELECT count(*) FROM woken
"""  # noqa: S608 -- composed of constants

HOT_STATEMENTS = (_ENQUEUE,)


async def enqueue(connection: asyncpg.Connection, deliveries: Sequence[NewDelivery]) -> None:
    """Store the deliveries, in the caller's transaction; the dispatchers wake on commit."""
    if not deliveries:
        return
    await connection.execute(
        _ENQUEUE,
        [d.id for d in deliveries],
        [d.event_id for d in deliveries],
        [d.subscription_id for d in deliveries],
        [d.call_id for d in deliveries],
    )
