"""Retention (SPEC §5): the worker drops old days of events, final deliveries and attempts.

History is partitioned by day; rows are aged by moving their created_at back, into days that
the service would not have created by itself (they are past the horizon): the tests create
them as the migration does for an older database's rows.
"""

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tests.operations_helpers import AN_HOUR_LATER, ingest, wait_for_delivery
from tests.support import Reply, call_event, create_subscription, wait_until
from voicehooks.db import partitions
from voicehooks.db.urls import libpq_url
from voicehooks.queue import upkeep

FAST_HOUSEKEEPING = {"housekeeping_interval": 0.2}


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return dict(FAST_HOUSEKEEPING)


async def _delivered(client, db, tenant, sub, receiver, call_id, reply, **wait):
    receiver.reply(reply)
    result = await ingest(client, call_event(tenant.workspace_id, call_id=call_id))
    row = await wait_for_delivery(db, result["id"], sub["id"], **wait)
    return uuid.UUID(result["id"]), row["id"]


async def _age(db, days: float, event_id, delivery_id=None, *, attempts: bool = True) -> None:
    now = datetime.now(UTC)
    # In one transaction: one now(), so that a delivery keeps its event's created_at (the
    # caller's, if it has one: the same now() for every row it ages). Retention waits for it:
    # the running worker would otherwise drop an empty past day between its creation here
    # and the rows moving in.
    async with db.transaction():
        await db.execute("SELECT pg_advisory_xact_lock($1)", upkeep.RETENTION_LOCK)
        await partitions.ensure_partitions(
            db, partitions.days_between((now - timedelta(days=days + 1)).date(), now.date())
        )
        await _move_back(db, days, event_id, delivery_id, attempts=attempts)


async def _move_back(db, days: float, event_id, delivery_id, *, attempts: bool) -> None:
    interval = f"now() - make_interval(secs => {days * 86400})"
    await db.execute(f"UPDATE events SET created_at = {interval} WHERE id = $1", event_id)
    await db.execute(f"UPDATE event_keys SET created_at = {interval} WHERE event_id = $1", event_id)
    if delivery_id is not None:
        await db.execute(
            f"UPDATE deliveries SET created_at = {interval} WHERE id = $1", delivery_id
        )
        await db.execute(
            f"UPDATE delivery_queue SET delivery_created_at = {interval} WHERE delivery_id = $1",
            delivery_id,
        )
        if attempts:
            await db.execute(
                f"UPDATE attempts SET created_at = {interval} WHERE delivery_id = $1", delivery_id
            )


async def _exists(db, table: str, row_id) -> bool:
    return bool(await db.fetchval(f"SELECT count(*) FROM {table} WHERE id = $1", row_id))


async def _keys(db, event_id) -> int:
    return int(await db.fetchval("SELECT count(*) FROM event_keys WHERE event_id = $1", event_id))


async def _attempt_count(db, delivery_id) -> int:
    return int(
        await db.fetchval("SELECT count(*) FROM attempts WHERE delivery_id = $1", delivery_id)
    )


async def test_old_rows_are_purged_but_never_a_pending_delivery(
    client, db, tenant, receiver, dispatcher
):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    old_ok = await _delivered(
        client, db, tenant, sub, receiver, "old-ok", Reply(200), state="succeeded"
    )
    old_down = await _delivered(
        client, db, tenant, sub, receiver, "old-down", Reply(500), state="failed", attempts=4
    )
    pending = await _delivered(
        client,
        db,
        tenant,
        sub,
        receiver,
        "waiting",
        Reply(503, headers=AN_HOUR_LATER),
        state="pending",
        attempts=1,
    )
    young = await _delivered(
        client, db, tenant, sub, receiver, "young", Reply(200), state="succeeded"
    )
    unmatched = await ingest(
        client,
        call_event(
            tenant.workspace_id, event="voice.outbound", call_id="nobody", client_id="nobody-1"
        ),
    )
    assert unmatched["deliveries"] == 0
    unmatched_id = uuid.UUID(unmatched["id"])

    # All at once: retention, running meanwhile, would drop a day aged before the rest.
    async with db.transaction():
        await _age(db, 31, *old_ok)
        await _age(db, 31, *old_down)
        # A day before theirs, and past the horizon too: kept whole while its delivery is pending.
        await _age(db, 32, *pending, attempts=False)
        await _age(db, 31, unmatched_id)
        await _age(db, 29, *young)
    assert await _keys(db, unmatched_id) == 1

    async def purged() -> bool:
        return not any(
            [
                await _exists(db, "events", old_ok[0]),
                await _exists(db, "events", old_down[0]),
                await _exists(db, "events", unmatched_id),
                await _exists(db, "deliveries", old_ok[1]),
                await _exists(db, "deliveries", old_down[1]),
                await _attempt_count(db, old_ok[1]),
                await _attempt_count(db, old_down[1]),
                await _keys(db, unmatched_id),
            ]
        )

    await wait_until(purged, timeout=10)
    # Whole days went, none of their rows was deleted one by one.
    day = (datetime.now(UTC) - timedelta(days=31)).date()
    assert partitions.partition_name("deliveries", day) not in await partitions.existing_partitions(
        db
    )
    for event_id, delivery_id in (pending, young):
        assert await _exists(db, "events", event_id)
        assert await _exists(db, "deliveries", delivery_id)
        assert await _attempt_count(db, delivery_id) == 1

    listed = await client.get(
        f"{tenant.subscription(sub['id'])}/deliveries", headers=tenant.headers
    )
    assert {d["id"] for d in listed.json()["results"]} == {str(pending[1]), str(young[1])}
    logs = await client.get(
        f"{tenant.subscription(sub['id'])}/logs", params={"limit": 100}, headers=tenant.headers
    )
    assert {entry["deliveryId"] for entry in logs.json()["results"]} == {
        str(pending[1]),
        str(young[1]),
    }

    # The same client event id is new again once its event is gone.
    again = await ingest(
        client,
        call_event(
            tenant.workspace_id, event="voice.outbound", call_id="nobody", client_id="nobody-1"
        ),
    )
    assert again["id"] != str(unmatched_id)

    # The pending delivery, however old, is still delivered when its time comes.
    receiver.reply(Reply(200))
    await db.execute("UPDATE delivery_queue SET due_at = now() WHERE delivery_id = $1", pending[1])
    await wait_for_delivery(db, str(pending[0]), sub["id"], state="succeeded", attempts=2)
    assert receiver.requests[-1].json()["payload"]["id"] == "waiting"


@pytest.mark.parametrize("settings_overrides", [{**FAST_HOUSEKEEPING, "retention_days": 1}])
async def test_the_retention_period_is_a_setting(client, db, tenant, receiver, dispatcher):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    two_days = await _delivered(
        client, db, tenant, sub, receiver, "two-days", Reply(200), state="succeeded"
    )
    half_a_day = await _delivered(
        client, db, tenant, sub, receiver, "half-a-day", Reply(200), state="succeeded"
    )
    async with db.transaction():
        await _age(db, 2, *two_days)
        await _age(db, 0.5, *half_a_day)

    async def gone() -> bool:
        return not await _exists(db, "deliveries", two_days[1]) and not await _exists(
            db, "events", two_days[0]
        )

    await wait_until(gone, timeout=10)
    assert await _exists(db, "deliveries", half_a_day[1])
    assert await _exists(db, "events", half_a_day[0])
    assert await _attempt_count(db, half_a_day[1]) == 1


async def test_a_detach_cut_short_is_finished_and_its_day_dropped(db, database_url):
    now = datetime.now(UTC)
    day = (now - timedelta(days=40)).date()
    await partitions.ensure_partitions(db, [day])
    name = partitions.partition_name("attempts", day)
    # A reader holds the partitions: the detach's second step waits for it, and is cancelled.
    reader = await asyncpg.connect(libpq_url(database_url))
    try:
        async with reader.transaction():
            await reader.fetchval("SELECT count(*) FROM attempts")
            await db.execute("SET statement_timeout = '300ms'")
            with pytest.raises(asyncpg.QueryCanceledError):
                await db.execute(f"ALTER TABLE attempts DETACH PARTITION {name} CONCURRENTLY")
            await db.execute("RESET statement_timeout")
    finally:
        await reader.close()
    pending = "SELECT count(*) FROM pg_inherits WHERE inhrelid = $1::regclass AND inhdetachpending"
    assert await db.fetchval(pending, name) == 1

    expired = await upkeep.expire_history(db, now, retention_days=30)

    assert expired is not None and day in expired.dropped
    left = await db.fetchval(
        "SELECT count(*) FROM pg_class WHERE relname = ANY($1::text[])",
        [partitions.partition_name(table, day) for table in partitions.HISTORY_TABLES],
    )
    assert left == 0
