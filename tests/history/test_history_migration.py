"""Migration 0005: a database filled by revision 0004 moves to day partitions, every row kept."""

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from tests.delivery_helpers import ingest, running_dispatcher
from tests.migration_helpers import database_at, insert_organization_and_workspace
from tests.operations_helpers import api_client
from tests.subscriptions_helpers import TEST_KEY_RING
from tests.support import bootstrap_tenant, call_event, wait_until
from voicehooks.db import partitions
from voicehooks.db.migrate import upgrade
from voicehooks.db.urls import libpq_url

HISTORY = ("events", "deliveries", "attempts", "delivery_queue")
DAYS_AGO = (10, 3, 0)


@pytest.fixture
async def database_at_0004(server_url: str, receiver) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    async with database_at(server_url, "voicehooks_history", "0001") as url:
        ids = await _subscription_at_0001(url, receiver.url)
        await upgrade(url, key_ring=TEST_KEY_RING, revision="0004")
        yield url, ids


async def _connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(libpq_url(url))


async def _subscription_at_0001(url: str, receiver_url: str) -> dict[str, Any]:
    ids = {name: uuid.uuid4() for name in ("organization", "workspace", "subscription")}
    connection = await _connect(url)
    try:
        await insert_organization_and_workspace(connection, ids["organization"], ids["workspace"])
        await connection.execute(
            "INSERT INTO subscriptions (id, organization_id, workspace_id, service, event, url,"
            " target_host, signing_key, event_filters) VALUES ($1, $2, $3, 'channels',"
            " 'voice.inbound', $4, '127.0.0.1', 'a-signing-key-of-revision-0001', '[]'::jsonb)",
            ids["subscription"],
            ids["organization"],
            ids["workspace"],
            receiver_url + "/hook",
        )
    finally:
        await connection.close()
    return ids


def _body(call_id: str) -> str:
    return json.dumps({"event": "voice.inbound", "payload": {"id": call_id, "status": "ringing"}})


async def _fill_at_0004(url: str, ids: dict[str, Any]) -> dict[str, uuid.UUID]:
    """Per day (10 and 3 days ago, today): an event with a client id and one without; a
    delivery of each, finished with attempts on the old days; today's two pending deliveries of
    one call, the first queued and due, the second waiting behind it."""
    now = datetime.now(UTC)
    pending: dict[str, uuid.UUID] = {}
    connection = await _connect(url)
    try:
        for days in DAYS_AGO:
            at = now - timedelta(days=days)
            for n, client_id in enumerate((f"client-{days}", None)):
                event_id, delivery_id = uuid.uuid4(), uuid.uuid4()
                call_id = "call-today" if days == 0 else f"call-{days}-{n}"
                await connection.execute(
                    "INSERT INTO events (id, workspace_id, client_id, event, call_id, body,"
                    " delivery_count, created_at) VALUES ($1, $2, $3, 'voice.inbound', $4, $5,"
                    " 1, $6)",
                    event_id,
                    ids["workspace"],
                    client_id,
                    call_id,
                    _body(f"{call_id}-{n}"),
                    at,
                )
                state = {10: "succeeded", 3: "failed", 0: "pending"}[days]
                await connection.execute(
                    "INSERT INTO deliveries (id, event_id, subscription_id, call_id, state,"
                    " attempts, next_attempt_at, created_at, updated_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
                    delivery_id,
                    event_id,
                    ids["subscription"],
                    call_id,
                    state,
                    0 if days == 0 else 2,
                    at if days == 0 and n == 0 else None,
                    at,  # its event's, as ingestion writes both in one transaction
                )
                for attempt in (1, 2) if days else ():
                    await connection.execute(
                        "INSERT INTO attempts (id, delivery_id, subscription_id, event_id,"
                        " event, attempt, execution_status, duration_ms, response_status_code,"
                        " created_at) VALUES ($1, $2, $3, $4, 'voice.inbound', $5, $6, 12,"
                        " $7, $8)",
                        uuid.uuid4(),
                        delivery_id,
                        ids["subscription"],
                        event_id,
                        attempt,
                        "failed" if state == "failed" or attempt == 1 else "succeeded",
                        500 if state == "failed" or attempt == 1 else 200,
                        at + timedelta(minutes=attempt),
                    )
                if days == 0:
                    pending[f"pending-{n}"] = delivery_id
        await connection.execute(
            "INSERT INTO delivery_queue (delivery_id, subscription_id, call_id, target_host,"
            " due_at) VALUES ($1, $2, 'call-today', '127.0.0.1', now())",
            pending["pending-0"],
            ids["subscription"],
        )
    finally:
        await connection.close()
    return pending


async def _snapshot(url: str) -> dict[str, list[dict[str, Any]]]:
    connection = await _connect(url)
    try:
        return {
            table: [
                dict(row)
                for row in await connection.fetch(
                    f"SELECT * FROM {table} ORDER BY {'delivery_id' if 'queue' in table else 'id'}"
                )
            ]
            for table in HISTORY
        }
    finally:
        await connection.close()


async def test_every_row_moves_into_its_day_and_pending_work_is_delivered_after(
    database_at_0004, receiver
):
    url, ids = database_at_0004
    pending = await _fill_at_0004(url, ids)
    before = await _snapshot(url)
    assert [len(before[table]) for table in HISTORY] == [6, 6, 8, 1]

    await upgrade(url, key_ring=TEST_KEY_RING)

    after = await _snapshot(url)
    for table in ("events", "deliveries", "attempts"):
        # Every column the rows had, as they were (later revisions may add columns).
        kept = [
            {column: row[column] for column in old}
            for row, old in zip(after[table], before[table], strict=True)
        ]
        assert kept == before[table], table
    created = {row["id"]: row["created_at"] for row in after["deliveries"]}
    queued = {row["delivery_id"]: row for row in after["delivery_queue"]}
    # The queued one is still the head; every other pending delivery waits behind it.
    head = queued.pop(pending["pending-0"])
    assert head["delivery_created_at"] == created[pending["pending-0"]]
    assert {column: head[column] for column in before["delivery_queue"][0]} == (
        before["delivery_queue"][0]
    )
    assert set(queued) == set(pending.values()) - {pending["pending-0"]}
    assert all(row["due_at"] is None for row in queued.values())

    connection = await _connect(url)
    try:
        # Each row is in the partition of its day; the parents hold none themselves.
        for table in ("events", "deliveries", "attempts"):
            misplaced = await connection.fetchval(
                f"SELECT count(*) FROM {table}"
                " WHERE tableoid::regclass::text <>"
                f" '{table}_p' || to_char(created_at AT TIME ZONE 'UTC', 'YYYYMMDD')"
            )
            assert misplaced == 0, table
        kinds = await connection.fetch(
            "SELECT relname, relkind::text FROM pg_class WHERE relname = ANY($1::text[])",
            ["events", "deliveries", "attempts"],
        )
        assert {row["relkind"] for row in kinds} == {"p"}
        keys = await connection.fetch("SELECT client_id, event_id FROM event_keys")
        by_client = {row["client_id"]: row["id"] for row in before["events"] if row["client_id"]}
        assert {row["client_id"]: row["event_id"] for row in keys} == by_client
        names = await partitions.existing_partitions(connection)
        today = datetime.now(UTC).date()
        for day in partitions.days_between(today, today + timedelta(days=partitions.DAYS_AHEAD)):
            assert partitions.partition_name("deliveries", day) in names
    finally:
        await connection.close()

    tenant = await bootstrap_tenant(url, "migrated", "main")
    async with api_client(url) as client, running_dispatcher(url):
        # A client event id stored before the migration is still known.
        duplicate = await ingest(
            client, call_event(tenant.workspace_id, client_id="client-3", call_id="again")
        )
        assert duplicate["id"] == str(by_client["client-3"])
        fresh = await ingest(client, call_event(tenant.workspace_id, call_id="after-migration"))
        assert fresh["deliveries"] == 1
        requests = await wait_until(lambda: len(receiver.to("/hook")) >= 3 and receiver.to("/hook"))

    # The call's two pending deliveries in their order; the new event's too.
    sent = [request.json()["payload"]["id"] for request in requests]
    assert [call for call in sent if call.startswith("call-today")] == [
        "call-today-0",
        "call-today-1",
    ]
    assert "after-migration" in sent
    connection = await _connect(url)
    try:
        states = await connection.fetch("SELECT id, state, seq FROM deliveries")
        by_id = {row["id"]: row for row in states}
        assert {by_id[pending[name]]["state"] for name in pending} == {"succeeded"}
        newest = max(states, key=lambda row: row["seq"])
        assert newest["seq"] > max(row["seq"] for row in before["deliveries"])
    finally:
        await connection.close()
