"""Order per call: of a call's pending deliveries for one subscription, only the earliest is
the head (due, may be claimed); the others wait in the queue behind it, with no due time.
When the head is final, the waiting one with the lowest sequence becomes the head.

Every pending delivery has its row in `delivery_queue`, so the order is decided on that small
table alone, never on the history of deliveries, and the database keeps the rule: a unique
index on (subscription, call) over the heads (`due_at IS NOT NULL`).

`QUEUE` adds deliveries, given as a CTE named `to_queue` (delivery_id, created_at,
subscription_id, call_id, target_host, seq): of each call the one with the lowest sequence
becomes the head if the call has no row in the queue yet; every other one waits, and so does
one that loses a race with a concurrent writer's head. Its CTE `heads` returns their ids.
`PROMOTE` makes the next waiting delivery the head of each call of a CTE named `calls`
(subscription_id, call_id); its CTE `promoted` returns (delivery_id, delivery_created_at),
which the statement returns for `mark_due` to give their history rows their due time.
Both are CTE lists to splice after `WITH ... ,`.
"""

from collections.abc import Sequence

import asyncpg

QUEUE = """
    candidates AS (
        -- The first of each call is the head unless the call has a row in the queue already:
        -- one probe of ix_delivery_queue_call per call (a LATERAL with LIMIT stays a probe;
        -- `t.first` inside it is a one-time filter, so the others of the call probe nothing).
        SELECT t.*, t.first AND blocker.found IS NULL AS head
        FROM (
            SELECT to_queue.*, row_number() OVER (
                       PARTITION BY to_queue.subscription_id, to_queue.call_id
                       ORDER BY to_queue.seq) = 1 AS first
            FROM to_queue
        ) AS t
        LEFT JOIN LATERAL (
            SELECT true AS found FROM delivery_queue q
            WHERE t.first AND q.subscription_id = t.subscription_id AND q.call_id = t.call_id
            LIMIT 1
        ) AS blocker ON true
    ), heads AS (
        INSERT INTO delivery_queue (delivery_id, delivery_created_at, subscription_id, call_id,
                                    target_host, seq, due_at)
        SELECT delivery_id, created_at, subscription_id, call_id, target_host, seq, now()
        FROM candidates WHERE head
        ON CONFLICT (subscription_id, call_id) WHERE due_at IS NOT NULL DO NOTHING
        RETURNING delivery_id
    ), waiting AS (
        INSERT INTO delivery_queue (delivery_id, delivery_created_at, subscription_id, call_id,
                                    target_host, seq, due_at)
        SELECT delivery_id, created_at, subscription_id, call_id, target_host, seq, NULL
        FROM candidates
        WHERE NOT head OR delivery_id NOT IN (SELECT delivery_id FROM heads)
    )
"""

PROMOTE = """
    promoted AS (
        -- The next waiting delivery of each call, by sequence (ix_delivery_queue_waiting),
        -- changed by its address: a TID scan, whatever the statistics say of the queue.
        UPDATE delivery_queue q SET due_at = now()
        FROM calls CROSS JOIN LATERAL (
            SELECT w.ctid AS row_id FROM delivery_queue w
            WHERE w.subscription_id = calls.subscription_id AND w.call_id = calls.call_id
              AND w.due_at IS NULL
            ORDER BY w.seq
            LIMIT 1
        ) AS next
        WHERE q.ctid = next.row_id
        RETURNING q.delivery_id, q.delivery_created_at
    )
"""

# A statement of its own because the promoted deliveries' days are only known once they are
# promoted, and naming them is what lets the planner prune to their partitions (see
# voicehooks.queue.results for what a join by value alone did).
_MARK_DUE = """
UPDATE deliveries d SET next_attempt_at = now()
FROM unnest($1::uuid[], $2::timestamptz[]) AS p(id, created_at)
WHERE d.id = p.id AND d.created_at = p.created_at AND d.created_at = ANY($2::timestamptz[])
"""


async def mark_due(connection: asyncpg.Connection, promoted: Sequence[asyncpg.Record]) -> int:
    """Record in history that the deliveries `PROMOTE` returned are due now; their number."""
    if promoted:
        await connection.execute(
            _MARK_DUE,
            [row["delivery_id"] for row in promoted],
            [row["delivery_created_at"] for row in promoted],
        )
    return len(promoted)
