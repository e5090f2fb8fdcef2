"""Concurrent ingest requests share transactions (SPEC §3): each request still gets its own
answer (a bad item its 422 alone, a repeated id its original's result), a 202 still means its
rows are committed, and events of one call keep their order."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from tests.delivery_helpers import INGEST_HEADERS, count, ingest
from tests.support import Tenant, call_event, create_subscription, wait_until
from voicehooks.api.app import create_app
from voicehooks.db.urls import libpq_url

EVENTS = "/internal/v1/events"


async def _waiting_for_locks(db: asyncpg.Connection) -> int:
    return await count(
        db,
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND datname = current_database()",
    )


@contextlib.asynccontextmanager
async def _subscription_locked(database_url: str, subscription_id: str) -> AsyncIterator[None]:
    """Every ingest transaction that matches the subscription waits while this is held."""
    locker = await asyncpg.connect(libpq_url(database_url))
    try:
        async with locker.transaction():
            await locker.execute(
                "SELECT 1 FROM subscriptions WHERE id = $1 FOR UPDATE", subscription_id
            )
            yield
    finally:
        await locker.close()


async def _post(client: httpx.AsyncClient, item: object) -> httpx.Response:
    return await client.post(EVENTS, json=item, headers=INGEST_HEADERS)


async def test_requests_that_arrive_together_share_a_transaction_and_keep_their_answers(
    client, tenant, db, database_url
):
    subscription = await create_subscription(client, tenant)
    ws = tenant.workspace_id
    async with _subscription_locked(database_url, subscription["id"]):
        # The writer's transactions in flight wait for the lock; whatever arrives meanwhile
        # is buffered and goes in one transaction once it is released.
        blocked = [
            asyncio.ensure_future(_post(client, call_event(ws, call_id=f"first-{n}")))
            for n in range(2)
        ]
        await wait_until(lambda: _waiting_for_locks(db), timeout=10)
        items = {
            "plain": call_event(ws, call_id="plain"),
            "twin-1": call_event(ws, call_id="twin", client_id="same-id"),
            "bad": call_event(ws, call_id="bad", status="no-such-status"),
            "twin-2": call_event(ws, call_id="twin", client_id="same-id"),
            "other": call_event(ws, call_id="other", client_id="other-id"),
        }
        together = [asyncio.ensure_future(_post(client, item)) for item in items.values()]
        assert not any(request.done() for request in blocked)
        # The invalid one is answered at once, alone: it never reaches the writer.
        bad = await asyncio.wait_for(together[2], timeout=10)
        assert bad.status_code == 422
        assert [e["field"] for e in bad.json()["errors"]] == ["payload.status"]
        waiting = blocked + together[:2] + together[3:]
        assert not any(request.done() for request in waiting)
    answers = dict(zip(items, await asyncio.gather(*together), strict=True))
    assert [answer.status_code for answer in await asyncio.gather(*blocked)] == [202, 202]

    assert {name: answer.status_code for name, answer in answers.items()} == {
        "plain": 202,
        "twin-1": 202,
        "bad": 422,
        "twin-2": 202,
        "other": 202,
    }
    first, second = answers["twin-1"].json(), answers["twin-2"].json()
    assert first == {"id": first["id"], "deliveries": 1, "duplicate": False}
    assert second == {"id": first["id"], "deliveries": 1, "duplicate": True}
    assert answers["plain"].json()["duplicate"] is False
    assert answers["other"].json()["duplicate"] is False

    rows = await db.fetch("SELECT call_id, xmin::text AS xid FROM events")
    assert sorted(row["call_id"] for row in rows) == [
        "first-0",
        "first-1",
        "other",
        "plain",
        "twin",
    ]
    # One transaction stored the three that arrived together (a row's xmin is its writer's).
    xids = {row["call_id"]: row["xid"] for row in rows}
    assert xids["plain"] == xids["twin"] == xids["other"]
    assert await count(db, "SELECT count(*) FROM deliveries") == 5


@pytest.fixture
async def answering_client(settings, database_url, db) -> AsyncIterator[httpx.AsyncClient]:
    """A client that gets the 500 a real one would, not the app's exception."""
    app = create_app(settings, database_url)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://voicehooks.test") as http:
        yield http
    await app.state.engine.dispose()


async def test_a_request_the_database_refuses_fails_alone(
    answering_client, tenant, db, database_url
):
    """An item that passes validation but that the database refuses (here a constraint the
    service knows nothing of) fails its own request only; its neighbours are stored."""
    client = answering_client
    subscription = await create_subscription(client, tenant)
    ws = tenant.workspace_id
    await db.execute("ALTER TABLE events ADD CONSTRAINT test_no_poison CHECK (call_id <> 'poison')")
    try:
        async with _subscription_locked(database_url, subscription["id"]):
            blocked = [
                asyncio.ensure_future(_post(client, call_event(ws, call_id=f"first-{n}")))
                for n in range(2)
            ]
            await wait_until(lambda: _waiting_for_locks(db), timeout=10)
            names = ["before", "poison", "after"]
            together = [
                asyncio.ensure_future(_post(client, call_event(ws, call_id=name))) for name in names
            ]
        answers = dict(zip(names, await asyncio.gather(*together), strict=True))
        await asyncio.gather(*blocked)
    finally:
        await db.execute("ALTER TABLE events DROP CONSTRAINT test_no_poison")

    assert {name: answer.status_code for name, answer in answers.items()} == {
        "before": 202,
        "poison": 500,
        "after": 202,
    }
    assert answers["poison"].headers["content-type"].startswith("application/problem+json")
    stored = {row["call_id"] for row in await db.fetch("SELECT call_id FROM events")}
    assert stored == {"first-0", "first-1", "before", "after"}
    assert await count(db, "SELECT count(*) FROM deliveries") == 4


async def test_a_202_means_the_event_and_its_deliveries_are_committed(
    client, tenant, db, database_url
):
    subscriptions = [await create_subscription(client, tenant) for _ in range(2)]
    lookers = await asyncpg.create_pool(libpq_url(database_url), min_size=8, max_size=8)
    try:

        async def ingest_and_look(n: int) -> tuple[int, int]:
            response = await _post(client, call_event(tenant.workspace_id, call_id=f"c{n}"))
            assert response.status_code == 202, response.text
            # Right at the 202, from another connection: the event and both deliveries.
            event_id = response.json()["id"]
            async with lookers.acquire() as connection:
                events = await count(
                    connection, "SELECT count(*) FROM events WHERE id = $1", event_id
                )
                deliveries = await count(
                    connection, "SELECT count(*) FROM deliveries WHERE event_id = $1", event_id
                )
            return events, deliveries

        seen = await asyncio.gather(*(ingest_and_look(n) for n in range(60)))
    finally:
        await lookers.close()
    assert seen == [(1, len(subscriptions))] * 60


async def test_events_of_a_call_sent_one_after_another_keep_their_order(client, tenant: Tenant, db):
    """While other calls' events arrive concurrently (and share transactions with them), a
    call whose statuses are sent one after the other (each after the previous 202) has its
    deliveries in that order: the first due, the later ones waiting for it."""
    await create_subscription(client, tenant)
    ws = tenant.workspace_id
    statuses = ["starting", "ringing", "ongoing", "completed"]

    async def one_call(call_id: str) -> list[str]:
        return [
            (await ingest(client, call_event(ws, call_id=call_id, status=status)))["id"]
            for status in statuses
        ]

    calls = [f"call-{n}" for n in range(12)]
    event_ids = await asyncio.gather(*(one_call(call_id) for call_id in calls))
    for call_id, ids in zip(calls, event_ids, strict=True):
        rows = await db.fetch(
            "SELECT event_id::text, next_attempt_at IS NOT NULL AS due FROM deliveries"
            " WHERE call_id = $1 ORDER BY seq",
            call_id,
        )
        assert [row["event_id"] for row in rows] == ids
        assert [row["due"] for row in rows] == [True, False, False, False]
