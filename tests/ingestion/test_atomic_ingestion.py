"""SPEC §4 "Atomic ingestion": no other session ever sees an event without its deliveries.

The reproduction: another session holds a matching subscription row locked, so the request
must wait at the point where it writes the deliveries. While it waits, a third session looks.
"""

import asyncio

import asyncpg
import httpx
import pytest

from tests.delivery_helpers import INGEST_HEADERS, count
from tests.support import Tenant, call_event, create_subscription, wait_until
from voicehooks.db.urls import libpq_url


async def _blocked_backends(db: asyncpg.Connection) -> int:
    """Sessions waiting for a lock: the request has reached the locked subscription row."""
    return await count(
        db,
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND datname = current_database()",
    )


async def _look_while_locked(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    database_url: str,
    subscription_id: str,
    send: object,
) -> httpx.Response:
    locker = await asyncpg.connect(libpq_url(database_url))
    try:
        transaction = locker.transaction()
        await transaction.start()
        await locker.execute(
            "SELECT 1 FROM subscriptions WHERE id = $1 FOR UPDATE", subscription_id
        )
        request = asyncio.ensure_future(send)  # type: ignore[arg-type]
        await wait_until(lambda: _blocked_backends(db), timeout=10)
        assert not request.done()
        # What any other session sees while the request is still writing: nothing at all.
        assert await count(db, "SELECT count(*) FROM events") == 0
        assert await count(db, "SELECT count(*) FROM deliveries") == 0
        await transaction.rollback()
        return await asyncio.wait_for(request, timeout=10)
    finally:
        await locker.close()


async def _ingest_one(client: httpx.AsyncClient, tenant: Tenant) -> httpx.Response:
    return await client.post(
        "/internal/v1/events", json=call_event(tenant.workspace_id), headers=INGEST_HEADERS
    )


async def _ingest_batch(client: httpx.AsyncClient, tenant: Tenant) -> httpx.Response:
    events = [call_event(tenant.workspace_id, call_id=f"call-{i}") for i in range(5)]
    return await client.post(
        "/internal/v1/events/batch", json={"events": events}, headers=INGEST_HEADERS
    )


@pytest.mark.parametrize("sender", [_ingest_one, _ingest_batch], ids=["single", "batch"])
async def test_an_event_and_its_deliveries_appear_in_one_commit(
    client, tenant, db, database_url, sender
):
    other = await create_subscription(client, tenant)
    locked = await create_subscription(client, tenant)
    response = await _look_while_locked(
        client, db, database_url, locked["id"], sender(client, tenant)
    )
    assert response.status_code == 202, response.text
    events = await count(db, "SELECT count(*) FROM events")
    assert events >= 1
    assert await count(db, "SELECT count(*) FROM deliveries") == 2 * events
    assert (
        await count(db, "SELECT count(*) FROM deliveries WHERE subscription_id = $1", other["id"])
        == events
    )


async def test_a_test_event_and_its_delivery_appear_in_one_commit(client, tenant, db, database_url):
    subscription = await create_subscription(client, tenant)
    response = await _look_while_locked(
        client,
        db,
        database_url,
        subscription["id"],
        client.post(f"{tenant.subscriptions}/{subscription['id']}/test", headers=tenant.headers),
    )
    assert response.status_code == 202, response.text
    assert await count(db, "SELECT count(*) FROM events") == 1
    assert await count(db, "SELECT count(*) FROM deliveries") == 1
