"""Days of history created while deliveries are recorded: no deadlock.

A recorder locks a batch's subscriptions (their health), then deliveries. Creating a
partition of `deliveries` locks `deliveries`, then, for its foreign key, `subscriptions`. Taken
in that order the two deadlock, and Postgres aborts one of them.
"""

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg

from tests.support import create_subscription, wait_until
from voicehooks.db import partitions
from voicehooks.db.urls import libpq_url


async def _waits_for_a_lock(db: asyncpg.Connection, pid: int) -> bool:
    return bool(
        await db.fetchval("SELECT count(*) FROM pg_locks WHERE pid = $1 AND NOT granted", pid)
    )


async def test_a_day_created_while_a_recorder_holds_subscriptions_does_not_deadlock(
    client, tenant, db, database_url
):
    subscription = await create_subscription(client, tenant)
    day = (datetime.now(UTC) - timedelta(days=90)).date()  # a day nobody else creates
    recorder = await asyncpg.connect(libpq_url(database_url))
    creator = await asyncpg.connect(libpq_url(database_url))
    try:
        transaction = recorder.transaction()
        await transaction.start()
        # As the recorder does: the batch's subscriptions first.
        await recorder.execute(
            "UPDATE subscriptions SET failing_since = NULL WHERE id = $1", subscription["id"]
        )
        creating = asyncio.create_task(partitions.ensure_partitions(creator, [day]))
        creator_pid = creator.get_server_pid()
        await wait_until(lambda: _waits_for_a_lock(db, creator_pid), timeout=10, interval=0.05)
        # Then its deliveries: held up by nothing now, the creator waits for the recorder.
        await recorder.fetchval("SELECT count(*) FROM deliveries")
        await transaction.commit()
        assert await asyncio.wait_for(creating, timeout=10) == len(partitions.HISTORY_TABLES)
    finally:
        await recorder.close()
        await creator.close()
    existing = await partitions.existing_partitions(db)
    assert {partitions.partition_name(t, day) for t in partitions.HISTORY_TABLES} <= existing
    for table in partitions.HISTORY_TABLES:
        await db.execute(f'DROP TABLE "{partitions.partition_name(table, day)}"')
