"""When the head of a call ends, the next delivery of the call becomes due, in the queue and in
the history that the deliveries endpoint reads (`nextAttemptAt`), also when the two were
stored on different days (different partitions)."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tests.delivery.test_query_plans import _subscriptions
from voicehooks.db import partitions
from voicehooks.queue import results
from voicehooks.queue.claim import ClaimedDelivery, claim
from voicehooks.queue.results import AttemptRecord
from voicehooks.states import Verdict

_STORE = """
WITH e AS (
    INSERT INTO events (id, workspace_id, event, call_id, body, delivery_count, created_at)
    SELECT $2, s.workspace_id, 'voice.inbound', $6, '{}', 1, $5
    FROM subscriptions s WHERE s.id = $1
), d AS (
    INSERT INTO deliveries (id, event_id, subscription_id, call_id, seq, next_attempt_at,
                            created_at)
    VALUES ($3, $2, $1, $6, nextval(pg_get_serial_sequence('deliveries', 'seq')),
            CASE WHEN $4 THEN now() END, $5)
    RETURNING id, seq
)
INSERT INTO delivery_queue (delivery_id, delivery_created_at, subscription_id, call_id,
                            target_host, seq, due_at)
SELECT d.id, $5, $1, $6, 'healthy.example', d.seq, CASE WHEN $4 THEN now() END FROM d
"""


@pytest.fixture
async def rolled_back(db: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    transaction = db.transaction()
    await transaction.start()
    try:
        yield db
    finally:
        await transaction.rollback()


async def _store(
    db: asyncpg.Connection,
    subscription_id: uuid.UUID,
    created_at: datetime,
    *,
    head: bool,
    call_id: str = "call-1",
) -> uuid.UUID:
    delivery_id = uuid.uuid4()
    await db.execute(_STORE, subscription_id, uuid.uuid4(), delivery_id, head, created_at, call_id)
    return delivery_id


def _succeeded(delivery: ClaimedDelivery, now: datetime) -> AttemptRecord:
    return AttemptRecord(
        delivery=delivery,
        outcome=Verdict.SUCCEEDED,
        retry_in=0.0,
        started_at=now,
        duration_ms=5,
        status_code=200,
        error=None,
        response_body="ok",
    )


@pytest.mark.parametrize("days_apart", [0, 1], ids=["same day", "next day"])
async def test_the_next_delivery_of_a_call_is_due_once_the_one_before_it_succeeded(
    rolled_back: asyncpg.Connection, days_apart: int
) -> None:
    db = rolled_back
    now = datetime.now(UTC)
    first_day = now - timedelta(days=days_apart)
    await partitions.ensure_partitions(db, [first_day.date(), now.date()])
    subscription_id, _ = await _subscriptions(db)
    first = await _store(db, subscription_id, first_day, head=True)
    second = await _store(db, subscription_id, now, head=False)

    claimed = await claim(db, limit=10, host_free={}, per_host=10, lease_seconds=30)
    assert [d.id for d in claimed] == [first]  # the second waits behind it
    assert await results.record(db, [_succeeded(claimed[0], now)]) == 1

    history = await db.fetchrow(
        "SELECT state, next_attempt_at FROM deliveries WHERE id = $1", second
    )
    assert history["state"] == "pending"
    assert history["next_attempt_at"] is not None
    assert [
        d.id for d in await claim(db, limit=10, host_free={}, per_host=10, lease_seconds=30)
    ] == [second]


async def test_a_batch_of_results_of_two_days_is_recorded_in_both(
    rolled_back: asyncpg.Connection,
) -> None:
    """Results are recorded one day of history at a time: a batch holding deliveries stored
    yesterday and today records each in its own day's partition."""
    db = rolled_back
    now = datetime.now(UTC)
    yesterday = now - timedelta(days=1)
    await partitions.ensure_partitions(db, [yesterday.date(), now.date()])
    subscription_id, _ = await _subscriptions(db)
    stored = {
        await _store(db, subscription_id, day, head=True, call_id=f"call-{n}")
        for n, day in enumerate((yesterday, now, yesterday))
    }
    claimed = await claim(db, limit=10, host_free={}, per_host=10, lease_seconds=30)
    assert {d.id for d in claimed} == stored
    await results.record(db, [_succeeded(d, now) for d in claimed])
    rows = await db.fetch(
        "SELECT d.state, d.attempts, (SELECT count(*) FROM attempts a WHERE a.delivery_id = d.id)"
        " AS logged FROM deliveries d WHERE d.id = ANY($1::uuid[])",
        list(stored),
    )
    assert [tuple(row) for row in rows] == [("succeeded", 1, 1)] * 3
    assert await db.fetchval("SELECT count(*) FROM delivery_queue") == 0
