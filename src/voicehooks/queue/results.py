"""Results: a batch of attempts recorded in one statement.

Every reference to the day-partitioned history names the batch's days ($17, the deliveries'
created_at values), so the planner prunes to their partitions and probes them by primary
key; joined by value alone, it plans for every day's partition and finds a hash join that
reads today's partition whole cheaper than a probe into each (seen after autovacuum's
statistics of a 10k-row day: every batch of results read every delivery of the day).

The attempts are logged (whoever holds the claim now: the attempt happened). Where the claim
is still the sender's, a retry stays queued with its new due time, and a final outcome takes
the delivery out of the queue and makes the next delivery of its call, if one waits, the head.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import orjson

from voicehooks.queue.claim import ClaimedDelivery
from voicehooks.queue.order import PROMOTE, mark_due
from voicehooks.states import Verdict

RECORD_SQL = f"""
WITH result AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::float8[], $5::uuid[],
                         $6::uuid[], $7::text[], $8::int[], $9::int[], $10::int[], $11::text[],
                         $12::text[], $13::timestamptz[], $14::text[], $15::jsonb[],
                         $16::timestamptz[])
        AS r(id, token, outcome, delay, subscription_id, event_id, event, attempt, duration_ms,
             status_code, error, response_body, started_at, execution_status, request_headers,
             created_at)
), logged AS (
    INSERT INTO attempts (id, delivery_id, subscription_id, event_id, event, attempt,
                          execution_status, duration_ms, response_status_code, error,
                          response_body, request_headers, created_at)
    SELECT gen_random_uuid(), r.id, r.subscription_id, r.event_id, r.event, r.attempt,
           r.execution_status, r.duration_ms, r.status_code, r.error, r.response_body,
           r.request_headers, r.started_at
    FROM result r
    WHERE EXISTS (SELECT 1 FROM deliveries d
                  WHERE d.id = r.id AND d.created_at = r.created_at
                    AND d.created_at = ANY($17::timestamptz[]))
), held AS (
    -- The results whose claim is still the sender's, with their queue rows locked: one
    -- primary-key probe per result (a LATERAL with LIMIT is not reordered into a join that
    -- walks the queue, whatever its statistics say).
    SELECT r.id, r.outcome, r.delay, q.row_id, q.subscription_id, q.call_id, q.target_host
    FROM result r
    CROSS JOIN LATERAL (
        SELECT q.ctid AS row_id, q.subscription_id, q.call_id, q.target_host
        FROM delivery_queue q
        WHERE q.delivery_id = r.id AND q.claim_token = r.token
        LIMIT 1
        FOR UPDATE
    ) AS q
), retried AS (
    UPDATE delivery_queue q
    SET claim_token = NULL, due_at = now() + make_interval(secs => h.delay)
    FROM held h
    WHERE q.ctid = h.row_id AND h.outcome = 'retry'
    RETURNING q.delivery_id
), finished AS (
    DELETE FROM delivery_queue q
    WHERE q.ctid = ANY(ARRAY(SELECT row_id FROM held WHERE outcome <> 'retry'))
    RETURNING q.delivery_id, q.subscription_id, q.call_id, q.target_host
), recorded AS (
    UPDATE deliveries d SET
        attempts = d.attempts + 1,
        state = CASE r.outcome WHEN 'retry' THEN 'pending' ELSE r.outcome END,
        next_attempt_at = CASE WHEN r.outcome = 'retry'
                               THEN now() + make_interval(secs => r.delay) END,
        updated_at = now()
    FROM held h JOIN result r ON r.id = h.id
    WHERE d.id = h.id AND d.created_at = r.created_at AND d.created_at = ANY($17::timestamptz[])
), calls AS (
    SELECT DISTINCT subscription_id, call_id FROM finished
), {PROMOTE}
SELECT delivery_id, delivery_created_at FROM promoted
"""  # noqa: S608 -- composed of constants

HOT_STATEMENTS = (RECORD_SQL,)


@dataclass(slots=True)
class AttemptRecord:
    delivery: ClaimedDelivery
    outcome: Verdict
    retry_in: float
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    response_body: str | None
    # A 410: the subscription is made inactive with the outcome.
    endpoint_gone: bool = False
    # As sent (the portal shows them); None when no request was built.
    request_headers: dict[str, str] | None = None

    @property
    def execution_status(self) -> str:
        return "succeeded" if self.outcome == Verdict.SUCCEEDED else "failed"


async def record(connection: asyncpg.Connection, records: Sequence[AttemptRecord]) -> int:
    """Record the attempts; returns how many waiting deliveries it queued."""
    created_at = [r.delivery.created_at for r in records]
    promoted = await connection.fetch(
        RECORD_SQL,
        [r.delivery.id for r in records],
        [r.delivery.claim_token for r in records],
        [r.outcome for r in records],
        [r.retry_in for r in records],
        [r.delivery.subscription_id for r in records],
        [r.delivery.event_id for r in records],
        [r.delivery.event for r in records],
        [r.delivery.attempts_made + 1 for r in records],
        [r.duration_ms for r in records],
        [r.status_code for r in records],
        [r.error for r in records],
        [r.response_body for r in records],
        [r.started_at for r in records],
        [r.execution_status for r in records],
        # orjson: a tenth of json.dumps' time, paid per attempt; jsonb keeps the same value.
        [
            None if r.request_headers is None else orjson.dumps(r.request_headers).decode()
            for r in records
        ],
        created_at,
        list(set(created_at)),
    )
    return await mark_due(connection, promoted)


def subscription_ids(records: Sequence[AttemptRecord], *, succeeded: bool) -> list[uuid.UUID]:
    """The subscriptions of the records that succeeded (or not), sorted: the lock order."""
    return sorted(
        {
            r.delivery.subscription_id
            for r in records
            if (r.outcome == Verdict.SUCCEEDED) == succeeded
        }
    )
