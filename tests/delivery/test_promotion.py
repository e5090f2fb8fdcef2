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
from voicehooks.queue.claim import claim
from voicehooks.queue.results import AttemptRecord
from voicehooks.states import Verdict

_STORE = """
WITH e AS (
    INSERT INTO events (id, workspace_id, event, call_id, body, delivery_count, created_at)
    SELECT $2, s.workspace_id, 'voice.inbound', 'call-1', '{}', 1, $5
    FROM subscriptions s WHERE s.id = $1
), d AS (
    INSERT INTO deliveries (id, event_id, subscription_id, call_id, seq, next_attempt_at,
                            created_at)
    VALUES ($3, $2, $1, 'call-1', nextval(pg_get_serial_sequence('deliveries', 'seq')),
            CASE WHEN $4 THEN now() END, $5)
    RETURNING id, seq
)
INSERT INTO delivery_queue (delivery_id, delivery_created_at, subscription_id, call_id,
                            target_host, seq, due_at)
SELECT d.id, $5, $1, 'call-1', 'healthy.example', d.seq, CASE WHEN $4 THEN now() END FROM d
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
    db: asyncpg.Connection, subscription_id: uuid.UUID, created_at: datetime, *, head: bool
) -> uuid.UUID:
    delivery_id = uuid.uuid4()
    await db.execute(_STORE, subscription_id, uuid.uuid4(), delivery_id, head, created_at)
    return delivery_id


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
    outcome = AttemptRecord(
        delivery=claimed[0],
        outcome=Verdict.SUCCEEDED,
        retry_in=0.0,
        started_at=now,
        duration_ms=5,
        status_code=200,
        error=None,
        response_body="ok",
    )
    assert await results.record(db, [outcome]) == 1

    history = await db.fetchrow(
        "SELECT state, next_attempt_at FROM deliveries WHERE id = $1", second
    )
    assert history["state"] == "pending"
    assert history["next_attempt_at"] is not None
    assert [
        d.id for d in await claim(db, limit=10, host_free={}, per_host=10, lease_seconds=30)
    ] == [second]
