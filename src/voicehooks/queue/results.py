"""Results: a batch of attempts recorded in one statement per day of history.

Every reference to the day-partitioned history is bounded by the batch's day ($17 to $18), so
the planner prunes to its partition, in a plan made for the values as in a generic one (which
prunes as it starts; a list of days would prune only in a plan made for its values), and finds
each row by primary key, then by its address. Joined by value, it planned for every day's
partition and found reading a day whole and hashing it cheaper than probing it: after
autovacuum's statistics of a 10k-row day every batch of results read every delivery of the
day, and on a day not analyzed yet (each morning) as soon as a day held fewer pages than a
batch had results.

The attempts are logged (whoever holds the claim now: the attempt happened). Where the claim
is still the sender's, a retry stays queued with its new due time, and a final outcome takes
the delivery out of the queue and makes the next delivery of its call, if one waits, the head.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import asyncpg
import orjson

from voicehooks.db import partitions
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
), found AS (
    -- Each result's history row and, where the claim is still the sender's, its queue row,
    -- locked: a primary-key probe of each per result (a LATERAL with LIMIT is not reordered
    -- into a join that reads a table whole, whatever its statistics say).
    SELECT r.*, d.ctid AS history_row, q.row_id AS queue_row
    FROM result r
    LEFT JOIN LATERAL (
        SELECT d.ctid FROM deliveries d
        WHERE d.id = r.id AND d.created_at = r.created_at
          AND d.created_at >= $17::timestamptz AND d.created_at < $18::timestamptz
        LIMIT 1
    ) AS d ON true
    LEFT JOIN LATERAL (
        SELECT q.ctid AS row_id FROM delivery_queue q
        WHERE q.delivery_id = r.id AND q.claim_token = r.token
        LIMIT 1
        FOR UPDATE
    ) AS q ON true
), logged AS (
    INSERT INTO attempts (id, delivery_id, subscription_id, event_id, event, attempt,
                          execution_status, duration_ms, response_status_code, error,
                          response_body, request_headers, created_at)
    SELECT gen_random_uuid(), f.id, f.subscription_id, f.event_id, f.event, f.attempt,
           f.execution_status, f.duration_ms, f.status_code, f.error, f.response_body,
           f.request_headers, f.started_at
    FROM found f WHERE f.history_row IS NOT NULL
), retried AS (
    UPDATE delivery_queue q
    SET claim_token = NULL, due_at = now() + make_interval(secs => f.delay)
    FROM found f
    WHERE q.ctid = f.queue_row AND f.outcome = 'retry'
    RETURNING q.delivery_id
), finished AS (
    DELETE FROM delivery_queue q
    WHERE q.ctid = ANY(ARRAY(SELECT queue_row FROM found
                             WHERE queue_row IS NOT NULL AND outcome <> 'retry'))
    RETURNING q.delivery_id, q.subscription_id, q.call_id, q.target_host
), recorded AS (
    -- By the addresses found above, in the day's partition: a TID scan, whatever the
    -- partition's size or statistics.
    UPDATE deliveries d SET
        attempts = d.attempts + 1,
        state = CASE f.outcome WHEN 'retry' THEN 'pending' ELSE f.outcome END,
        next_attempt_at = CASE WHEN f.outcome = 'retry'
                               THEN now() + make_interval(secs => f.delay) END,
        updated_at = now()
    FROM found f
    WHERE d.ctid = ANY(ARRAY(SELECT history_row FROM found WHERE queue_row IS NOT NULL))
      AND d.created_at >= $17::timestamptz AND d.created_at < $18::timestamptz
      AND f.id = d.id AND f.queue_row IS NOT NULL
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
    by_day: dict[date, list[AttemptRecord]] = {}
    for r in records:
        by_day.setdefault(r.delivery.created_at.astimezone(UTC).date(), []).append(r)
    promoted: list[asyncpg.Record] = []
    # Days in order, so that two recorders of the same days lock their rows in the same order.
    for day in sorted(by_day):
        promoted += await _record_day(connection, by_day[day], day)
    return await mark_due(connection, promoted)


async def _record_day(
    connection: asyncpg.Connection, records: Sequence[AttemptRecord], day: date
) -> list[asyncpg.Record]:
    return await connection.fetch(
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
        [r.delivery.created_at for r in records],
        partitions.day_start(day),
        partitions.day_start(day + timedelta(days=1)),
    )


def subscription_ids(records: Sequence[AttemptRecord], *, succeeded: bool) -> list[uuid.UUID]:
    """The subscriptions of the records that succeeded (or not), sorted: the lock order."""
    return sorted(
        {
            r.delivery.subscription_id
            for r in records
            if (r.outcome == Verdict.SUCCEEDED) == succeeded
        }
    )
