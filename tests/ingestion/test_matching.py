"""Which subscriptions an event reaches (SPEC §3 "Matching"), and that matching uses its index."""

import json
import uuid

import pytest

from tests.delivery_helpers import deliveries, ingest, ingest_batch
from tests.support import call_event, create_subscription, wait_until
from voicehooks.ingestion.repository import MATCH_SQL

CHANNEL = "b827924e-9789-4c2f-a4d5-b352175354f6"
OTHER_CHANNEL = "0c0ffee0-0000-4000-8000-000000000001"


def channel(value: str = CHANNEL) -> dict[str, str]:
    return {"key": "channelId", "value": value}


def status(value: str) -> dict[str, str]:
    return {"key": "status", "value": value}


async def matched_subscriptions(db, event_id: str) -> set[str]:
    rows = await db.fetch(
        "SELECT subscription_id FROM deliveries WHERE event_id = $1", uuid.UUID(event_id)
    )
    return {str(row["subscription_id"]) for row in rows}


@pytest.mark.parametrize(
    ("filters", "sent", "expected"),
    [
        # no filters: every call of the event
        ([], {}, True),
        ([], {"channel_id": OTHER_CHANNEL, "status": "busy"}, True),
        # channelId alone
        ([channel()], {}, True),
        ([channel()], {"status": "completed"}, True),
        ([channel()], {"channel_id": OTHER_CHANNEL}, False),
        # channel id compared as a UUID, not as text
        ([channel(CHANNEL.upper())], {}, True),
        ([channel()], {"channel_id": CHANNEL.upper()}, True),
        # status alone, one or several
        ([status("ringing")], {}, True),
        ([status("completed")], {}, False),
        ([status("completed"), status("ringing")], {}, True),
        ([status("completed"), status("busy")], {"status": "ongoing"}, False),
        # both: each must fit
        ([channel(), status("completed"), status("starting")], {"status": "completed"}, True),
        ([channel(), status("completed"), status("starting")], {"status": "ringing"}, False),
        (
            [channel(), status("completed")],
            {"status": "completed", "channel_id": OTHER_CHANNEL},
            False,
        ),
    ],
)
async def test_filters(client, tenant, db, filters, sent, expected):
    sub = await create_subscription(client, tenant, eventFilters=filters)
    result = await ingest(client, call_event(tenant.workspace_id, **sent))
    assert result["deliveries"] == (1 if expected else 0)
    assert await matched_subscriptions(db, result["id"]) == ({sub["id"]} if expected else set())
    listed = await deliveries(client, tenant, sub["id"])
    assert [d["eventId"] for d in listed] == ([result["id"]] if expected else [])


async def test_one_event_reaches_every_fitting_subscription_once(client, tenant, db):
    fits = [
        await create_subscription(client, tenant),
        await create_subscription(client, tenant, eventFilters=[channel()]),
        await create_subscription(client, tenant, eventFilters=[status("busy")]),
        await create_subscription(
            client, tenant, eventFilters=[channel(), status("ringing"), status("busy")]
        ),
    ]
    misses = [
        await create_subscription(client, tenant, eventFilters=[channel(OTHER_CHANNEL)]),
        await create_subscription(client, tenant, eventFilters=[status("ringing")]),
        await create_subscription(client, tenant, event="voice.outbound"),
    ]
    result = await ingest(client, call_event(tenant.workspace_id, status="busy"))
    assert result["deliveries"] == len(fits)
    assert await matched_subscriptions(db, result["id"]) == {s["id"] for s in fits}
    for sub in misses:
        assert await deliveries(client, tenant, sub["id"]) == []


async def test_inbound_and_outbound_are_separate(client, tenant, db):
    inbound = await create_subscription(client, tenant, event="voice.inbound")
    outbound = await create_subscription(client, tenant, event="voice.outbound")
    results = await ingest_batch(
        client,
        [
            call_event(tenant.workspace_id, event="voice.inbound", call_id="in"),
            call_event(tenant.workspace_id, event="voice.outbound", call_id="out"),
            call_event(tenant.workspace_id, event="voice.outbound", status="accepted"),
        ],
    )
    assert [r["deliveries"] for r in results] == [1, 1, 1]
    assert await matched_subscriptions(db, results[0]["id"]) == {inbound["id"]}
    assert await matched_subscriptions(db, results[1]["id"]) == {outbound["id"]}
    assert await matched_subscriptions(db, results[2]["id"]) == {outbound["id"]}


async def test_inactive_subscription_gets_nothing(client, tenant, db):
    sub = await create_subscription(client, tenant)
    response = await client.patch(
        tenant.subscription(sub["id"]), json={"status": "inactive"}, headers=tenant.headers
    )
    assert response.status_code == 200
    assert (await ingest(client, call_event(tenant.workspace_id)))["deliveries"] == 0
    response = await client.patch(
        tenant.subscription(sub["id"]), json={"status": "active"}, headers=tenant.headers
    )
    assert response.status_code == 200
    again = await ingest(client, call_event(tenant.workspace_id))
    assert again["deliveries"] == 1
    assert [d["eventId"] for d in await deliveries(client, tenant, sub["id"])] == [again["id"]]


async def test_other_workspace_gets_nothing(client, tenant, other_tenant, db):
    mine = await create_subscription(client, tenant)
    theirs = await create_subscription(client, other_tenant)
    result = await ingest(client, call_event(tenant.workspace_id))
    assert result["deliveries"] == 1
    assert await matched_subscriptions(db, result["id"]) == {mine["id"]}
    assert await deliveries(client, other_tenant, theirs["id"]) == []


async def test_changed_filters_apply_to_later_events(client, tenant, db):
    sub = await create_subscription(client, tenant, eventFilters=[status("completed")])
    assert (await ingest(client, call_event(tenant.workspace_id)))["deliveries"] == 0
    response = await client.patch(
        tenant.subscription(sub["id"]),
        json={"eventFilters": [status("ringing")]},
        headers=tenant.headers,
    )
    assert response.status_code == 200
    assert (await ingest(client, call_event(tenant.workspace_id)))["deliveries"] == 1


async def test_subscription_created_after_the_event_does_not_receive_it(
    client, tenant, db, receiver, dispatcher
):
    early = await ingest(client, call_event(tenant.workspace_id, call_id="before"))
    assert early["deliveries"] == 0
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/late")
    later = await ingest(client, call_event(tenant.workspace_id, call_id="after"))
    assert later["deliveries"] == 1
    # The later event arriving proves the dispatcher ran; the earlier one never had a delivery.
    await wait_until(lambda: receiver.to("/late"))
    assert [r.json()["payload"]["id"] for r in receiver.to("/late")] == ["after"]
    assert [d["eventId"] for d in await deliveries(client, tenant, sub["id"])] == [later["id"]]


# -- the matching query uses its index --------------------------------------------------------


def _nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def _explain(db, params: list) -> dict:
    raw = await db.fetchval(f"EXPLAIN (FORMAT JSON) {MATCH_SQL}", *params)
    plan = json.loads(raw) if isinstance(raw, str) else raw
    return plan[0]["Plan"]


async def test_matching_query_probes_the_match_index(client, tenant, db):
    # Plenty of subscriptions in other workspaces, channels and events, so that reading the
    # whole table would be the expensive choice.
    organization = await db.fetchval(
        "INSERT INTO organizations (id, name) VALUES (gen_random_uuid(), 'crowd') RETURNING id"
    )
    workspaces = await db.fetch(
        "INSERT INTO workspaces (id, organization_id, name) "
        "SELECT gen_random_uuid(), $1, 'w' || n FROM generate_series(1, 200) n RETURNING id",
        organization,
    )
    await db.execute(
        """
        INSERT INTO subscriptions (id, organization_id, workspace_id, service, event, url,
                                   target_host, signing_key, event_filters, channel_id, status)
        SELECT gen_random_uuid(), $1, w.id, 'channels',
               CASE WHEN n % 2 = 0 THEN 'voice.inbound' ELSE 'voice.outbound' END,
               'https://example.com/hook', 'example.com', 'signing-key-123', '[]'::jsonb,
               CASE WHEN n % 3 = 0 THEN NULL ELSE gen_random_uuid() END,
               CASE WHEN n % 10 = 0 THEN 'inactive' ELSE 'active' END
        FROM unnest($2::uuid[]) AS w(id), generate_series(1, 25) AS n
        """,
        organization,
        [row["id"] for row in workspaces],
    )
    mine = await create_subscription(client, tenant, eventFilters=[channel()])
    await db.execute("ANALYZE subscriptions")
    # workspace ids, events, channel ids
    params = [[tenant.workspace_id], ["voice.inbound"], [uuid.UUID(CHANNEL)]]
    plans = [await _explain(db, params)]
    async with db.transaction():
        await db.execute("SET LOCAL enable_seqscan = off")
        plans.append(await _explain(db, params))
    for plan in plans:
        nodes = list(_nodes(plan))
        assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], plan
        # One probe per branch ("this channel" and "any channel"), index or bitmap index scan.
        probes = [n.get("Index Name") for n in nodes if "Index Name" in n]
        assert probes == ["ix_subscriptions_match"] * 2, json.dumps(plan, indent=1)
    # And the query finds the subscription it should.
    rows = await db.fetch(MATCH_SQL, *params)
    assert [str(row["id"]) for row in rows] == [mine["id"]]
