"""The internal ingestion API (SPEC §3): auth, validation, results, idempotency, limits."""

import asyncio
import json
import uuid

import pytest

from tests.delivery_helpers import INGEST_HEADERS, count, ingest, ingest_batch
from tests.support import call_event, create_subscription, wait_until
from voicehooks.db.engine import create_engine, create_sessionmaker
from voicehooks.ingestion.repository import IngestionRepository, NewEvent

EVENTS = "/internal/v1/events"
BATCH = "/internal/v1/events/batch"


def problem_fields(response) -> list[str]:
    assert response.headers["content-type"].startswith("application/problem+json")
    return [error["field"] for error in response.json()["errors"]]


# -- auth ------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [{"ingest_token": None}])
async def test_without_a_configured_token_ingestion_is_closed(client, tenant, db):
    for headers in ({}, INGEST_HEADERS, {"Authorization": "Bearer "}):
        response = await client.post(EVENTS, json=call_event(tenant.workspace_id), headers=headers)
        assert response.status_code == 401, headers
    assert await count(db, "SELECT count(*) FROM events") == 0


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", "Bearer test-ingest-token-012345678", "Basic dGVzdA=="],
)
async def test_missing_or_wrong_bearer_is_401(client, tenant, db, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    for path, body in (
        (EVENTS, call_event(tenant.workspace_id)),
        (BATCH, {"events": [call_event(tenant.workspace_id)]}),
    ):
        response = await client.post(path, json=body, headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/problem+json")
    assert await count(db, "SELECT count(*) FROM events") == 0


# -- validation ------------------------------------------------------------------------------


def _without(item: dict, *path: str) -> dict:
    target = item
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    return item


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: e["payload"].update(status="accepted"), "payload.status"),  # outbound only
        (lambda e: e["payload"].update(status="hangup"), "payload.status"),
        (lambda e: e["payload"].update(status=3), "payload.status"),
        (lambda e: _without(e, "payload", "status"), "payload.status"),
        (lambda e: e["payload"].update(channelId="not-a-uuid"), "payload.channelId"),
        (lambda e: e["payload"].update(channelId=None), "payload.channelId"),
        (lambda e: _without(e, "payload", "channelId"), "payload.channelId"),
        (lambda e: _without(e, "payload", "id"), "payload.id"),
        (lambda e: e["payload"].update(id=""), "payload.id"),
        (lambda e: e["payload"].update(id="x" * 256), "payload.id"),
        (lambda e: e.update(payload="ringing"), "payload"),
        (lambda e: e.update(event="voice.missed"), "event"),
        (lambda e: e.update(workspaceId="acme"), "workspaceId"),
        (lambda e: _without(e, "workspaceId"), "workspaceId"),
        (lambda e: e.update(id="k" * 256), "id"),
        (lambda e: e.update(occurredAt="yesterday"), "occurredAt"),
    ],
)
async def test_invalid_event_is_422_naming_the_field(client, tenant, db, mutate, field):
    item = call_event(tenant.workspace_id)
    mutate(item)
    response = await client.post(EVENTS, json=item, headers=INGEST_HEADERS)
    assert response.status_code == 422, response.text
    assert field in problem_fields(response)
    assert await count(db, "SELECT count(*) FROM events") == 0


async def test_statuses_are_checked_against_their_own_event(client, tenant):
    """`accepted` and `cancelled` exist for outbound calls only (SPEC §1)."""
    for status in ("accepted", "cancelled"):
        outbound = call_event(tenant.workspace_id, event="voice.outbound", status=status)
        assert (await ingest(client, outbound))["duplicate"] is False
        inbound = call_event(tenant.workspace_id, event="voice.inbound", status=status)
        response = await client.post(EVENTS, json=inbound, headers=INGEST_HEADERS)
        assert response.status_code == 422
    for status in ("starting", "ringing", "ongoing", "completed", "no-answer", "busy", "failed"):
        for event in ("voice.inbound", "voice.outbound"):
            await ingest(client, call_event(tenant.workspace_id, event=event, status=status))


async def test_invalid_item_fails_the_whole_batch_with_its_index(client, tenant, db):
    await create_subscription(client, tenant)  # would match every valid item
    items = [call_event(tenant.workspace_id, call_id=f"call-{i}") for i in range(10)]
    items[7]["payload"]["status"] = "accepted"
    items[9]["payload"]["channelId"] = "nope"
    response = await client.post(BATCH, json={"events": items}, headers=INGEST_HEADERS)
    assert response.status_code == 422, response.text
    fields = problem_fields(response)
    assert "events[7].payload.status" in fields
    assert "events[9].payload.channelId" in fields
    assert not any(f.startswith(("events[0]", "events[8]")) for f in fields)
    assert await count(db, "SELECT count(*) FROM events") == 0
    assert await count(db, "SELECT count(*) FROM deliveries") == 0


async def test_schema_errors_in_a_batch_name_the_index_too(client, tenant, db):
    items = [call_event(tenant.workspace_id) for _ in range(5)]
    items[3]["workspaceId"] = "not-a-uuid"
    response = await client.post(BATCH, json={"events": items}, headers=INGEST_HEADERS)
    assert response.status_code == 422
    assert "events[3].workspaceId" in problem_fields(response)
    assert await count(db, "SELECT count(*) FROM events") == 0


@pytest.mark.parametrize("size", [0, 1001])
async def test_batch_must_hold_1_to_1000_items(client, tenant, db, size):
    items = [call_event(tenant.workspace_id, call_id=f"c{i}") for i in range(size)]
    response = await client.post(BATCH, json={"events": items}, headers=INGEST_HEADERS)
    assert response.status_code == 422
    assert any(f.startswith("events") for f in problem_fields(response))
    assert await count(db, "SELECT count(*) FROM events") == 0


async def test_batch_of_1000_is_accepted_in_order(client, tenant, db):
    sub = await create_subscription(
        client, tenant, eventFilters=[{"key": "status", "value": "busy"}]
    )
    items = [
        call_event(tenant.workspace_id, call_id=f"c{i}", status="busy" if i % 3 == 0 else "ringing")
        for i in range(1000)
    ]
    results = await ingest_batch(client, items)
    assert len(results) == 1000
    assert [r["deliveries"] for r in results] == [1 if i % 3 == 0 else 0 for i in range(1000)]
    assert len({r["id"] for r in results}) == 1000
    rows = await db.fetch("SELECT id, call_id FROM events")
    call_of = {str(row["id"]): row["call_id"] for row in rows}
    assert [call_of[r["id"]] for r in results] == [f"c{i}" for i in range(1000)]
    assert await count(
        db, "SELECT count(*) FROM deliveries WHERE subscription_id = $1", uuid.UUID(sub["id"])
    ) == len(range(0, 1000, 3))


# -- results ---------------------------------------------------------------------------------


async def test_single_result_is_id_deliveries_duplicate(client, tenant, db):
    for _ in range(2):
        await create_subscription(client, tenant)
    response = await client.post(
        EVENTS, json=call_event(tenant.workspace_id), headers=INGEST_HEADERS
    )
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"id", "deliveries", "duplicate"}
    assert body["deliveries"] == 2 and body["duplicate"] is False
    event_id = uuid.UUID(body["id"])
    assert await count(db, "SELECT count(*) FROM events WHERE id = $1", event_id) == 1
    assert await count(db, "SELECT count(*) FROM deliveries WHERE event_id = $1", event_id) == 2


async def test_unknown_workspace_is_acknowledged_with_no_deliveries(client, tenant):
    await create_subscription(client, tenant)
    result = await ingest(client, call_event(uuid.uuid4()))
    assert result["deliveries"] == 0 and result["duplicate"] is False
    uuid.UUID(result["id"])


# -- idempotency -----------------------------------------------------------------------------


async def test_repeated_client_id_returns_the_original(client, tenant, db):
    await create_subscription(client, tenant)
    item = call_event(tenant.workspace_id, client_id="evt-42")
    first = await ingest(client, item)
    assert first["duplicate"] is False and first["deliveries"] == 1
    # Even with a different payload, the client id decides: nothing new is stored.
    changed = call_event(tenant.workspace_id, client_id="evt-42", status="completed")
    for repeat in (item, changed):
        again = await ingest(client, repeat)
        assert again == {"id": first["id"], "deliveries": 1, "duplicate": True}
    assert await count(db, "SELECT count(*) FROM events") == 1
    assert await count(db, "SELECT count(*) FROM deliveries") == 1
    (batch_result,) = await ingest_batch(client, [item])
    assert batch_result == {"id": first["id"], "deliveries": 1, "duplicate": True}
    assert await count(db, "SELECT count(*) FROM deliveries") == 1


async def test_repeated_client_id_within_one_batch(client, tenant, db):
    await create_subscription(client, tenant)
    a = call_event(tenant.workspace_id, client_id="a", call_id="x")
    b = call_event(tenant.workspace_id, client_id="b", call_id="y")
    results = await ingest_batch(client, [a, b, a, call_event(tenant.workspace_id)])
    assert [r["duplicate"] for r in results] == [False, False, True, False]
    assert results[2]["id"] == results[0]["id"] and results[2]["deliveries"] == 1
    assert await count(db, "SELECT count(*) FROM events") == 3
    assert await count(db, "SELECT count(*) FROM deliveries") == 3


async def test_same_client_id_in_another_workspace_is_a_new_event(client, tenant, other_tenant, db):
    await create_subscription(client, tenant)
    await create_subscription(client, other_tenant)
    mine = await ingest(client, call_event(tenant.workspace_id, client_id="shared-id"))
    theirs = await ingest(client, call_event(other_tenant.workspace_id, client_id="shared-id"))
    assert theirs["id"] != mine["id"]
    assert theirs["duplicate"] is False and theirs["deliveries"] == 1
    assert await count(db, "SELECT count(*) FROM events") == 2


async def test_concurrent_duplicates_create_exactly_one_event(client, tenant, db):
    subs = [await create_subscription(client, tenant) for _ in range(3)]
    item = call_event(tenant.workspace_id, client_id="race-1")

    async def post():
        return await client.post(EVENTS, json=item, headers=INGEST_HEADERS)

    responses = await asyncio.gather(*(post() for _ in range(20)))
    assert [r.status_code for r in responses] == [202] * 20
    bodies = [r.json() for r in responses]
    assert len({b["id"] for b in bodies}) == 1
    assert sorted(b["duplicate"] for b in bodies) == [False] + [True] * 19
    assert {b["deliveries"] for b in bodies} == {3}
    assert await count(db, "SELECT count(*) FROM events") == 1
    rows = await db.fetch("SELECT subscription_id FROM deliveries")
    assert sorted(str(r["subscription_id"]) for r in rows) == sorted(s["id"] for s in subs)


async def test_concurrent_batches_sharing_client_ids(client, tenant, db):
    await create_subscription(client, tenant)
    items = [call_event(tenant.workspace_id, client_id=f"k{i}", call_id=f"c{i}") for i in range(5)]

    async def post(order):
        response = await client.post(BATCH, json={"events": order}, headers=INGEST_HEADERS)
        assert response.status_code == 202, response.text
        return response.json()["results"]

    orders = [items if n % 2 else items[::-1] for n in range(8)]
    runs = await asyncio.gather(*(post(order) for order in orders))
    ids: dict[str, set[str]] = {}
    for results, order in zip(runs, orders, strict=True):
        for result, item in zip(results, order, strict=True):
            ids.setdefault(item["id"], set()).add(result["id"])
    assert all(len(found) == 1 for found in ids.values())
    assert await count(db, "SELECT count(*) FROM events") == 5
    assert await count(db, "SELECT count(*) FROM deliveries") == 5


# -- sizes and payloads ----------------------------------------------------------------------


async def test_bodies_up_to_10_mib_are_accepted_and_larger_are_413(client, tenant, db):
    big = call_event(tenant.workspace_id, notes="n" * (3 * 1024 * 1024))  # over the public 1 MiB
    assert (await ingest(client, big))["duplicate"] is False
    too_big = call_event(tenant.workspace_id, notes="n" * (10 * 1024 * 1024 + 1))
    response = await client.post(EVENTS, json=too_big, headers=INGEST_HEADERS)
    assert response.status_code == 413
    response = await client.post(BATCH, json={"events": [too_big]}, headers=INGEST_HEADERS)
    assert response.status_code == 413
    assert await count(db, "SELECT count(*) FROM events") == 1


async def test_extra_payload_fields_are_delivered_as_given(client, tenant, receiver, dispatcher):
    await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    item = call_event(
        tenant.workspace_id,
        callerName="Zoë Ünal ☎",
        legs=[{"id": "leg-1", "cost": 0.0125, "tags": None}],
        duration=0,
        # Beyond 64 bits, and a float a shorter rendering would write as 1e16.
        sequence=2**70,
        rate=1e16,
        recorded=False,
        zzz="last",
        aaa="after zzz",
    )
    await ingest(client, item)
    (request,) = await wait_until(lambda: receiver.to("/hook"))
    delivered = json.loads(request.body)["payload"]
    assert delivered == item["payload"]
    assert list(delivered) == list(item["payload"])  # field order kept too


@pytest.mark.parametrize(
    ("fragment", "field"),
    [
        ('"note": "\\ud800"', "payload"),  # a lone surrogate: not representable in UTF-8
        ('"\\udfff": 1', "payload"),
        ('"id": "call\\u0000one"', "payload.id"),  # Postgres text cannot hold NUL
        ('"id": "\\ud83d"', "payload.id"),
    ],
)
async def test_text_that_cannot_be_stored_is_422_not_5xx(client, tenant, db, fragment, field):
    await create_subscription(client, tenant)
    for batch in (False, True):
        item = json.dumps(call_event(tenant.workspace_id)).replace(
            '"payload": {', '"payload": {' + fragment + ", ", 1
        )
        if '"id": ' in fragment:  # replaces the call id given above
            item = item.replace('"id": "call-1", ', "", 1)
        content = '{"events": [' + item + "]}" if batch else item
        response = await client.post(
            BATCH if batch else EVENTS,
            content=content.encode(),
            headers={**INGEST_HEADERS, "content-type": "application/json"},
        )
        assert response.status_code == 422, response.text
        assert (f"events[0].{field}" if batch else field) in problem_fields(response)
    assert await count(db, "SELECT count(*) FROM events") == 0


@pytest.mark.parametrize("number", ["NaN", "-Infinity", "1e999"])
async def test_numbers_json_cannot_carry_are_422_not_5xx(client, tenant, db, number):
    """Python's JSON parser reads these; a receiver's could not."""
    await create_subscription(client, tenant)
    for batch in (False, True):
        item = json.dumps(call_event(tenant.workspace_id)).replace(
            '"payload": {', f'"payload": {{"level": {number}, ', 1
        )
        response = await client.post(
            BATCH if batch else EVENTS,
            content=('{"events": [' + item + "]}" if batch else item).encode(),
            headers={**INGEST_HEADERS, "content-type": "application/json"},
        )
        assert response.status_code == 422, response.text
        assert problem_fields(response) == ["events[0].payload" if batch else "payload"]
    assert await count(db, "SELECT count(*) FROM events") == 0


async def test_client_id_that_cannot_be_stored_is_422(client, tenant, db):
    response = await client.post(
        EVENTS, json=call_event(tenant.workspace_id, client_id="a\u0000b"), headers=INGEST_HEADERS
    )
    assert response.status_code == 422
    assert problem_fields(response) == ["id"]
    assert await count(db, "SELECT count(*) FROM events") == 0


async def test_overlapping_batches_on_two_replicas_do_not_deadlock(database_url, tenant, db):
    """Two API processes storing the same client ids in opposite orders at the same moment
    (a retried batch, re-sorted by the sender). Large enough that both statements overlap."""
    engine = create_engine(database_url, pool_size=2)
    sessions = create_sessionmaker(engine)
    n = 20_000

    def events(order):
        return [
            NewEvent(
                id=uuid.uuid4(),
                workspace_id=tenant.workspace_id,
                client_id=f"k{i}",
                event="voice.inbound",
                call_id=f"call-{i}",
                body="{}",
                delivery_count=0,
                occurred_at=None,
            )
            for i in order
        ]

    async def store(batch):
        async with sessions() as session, session.begin():
            return await IngestionRepository(session).insert_events(batch)

    try:
        inserted = await asyncio.gather(
            store(events(range(n))), store(events(range(n - 1, -1, -1)))
        )
    finally:
        await engine.dispose()
    assert sum(len(ids) for ids in inserted) == n
    assert await count(db, "SELECT count(*) FROM events") == n
