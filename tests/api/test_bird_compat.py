"""SPEC §2, for clients written for Bird: null filters, Bird's log names, log details, ports."""

import uuid

from tests.operations_helpers import ingest, wait_for_delivery
from tests.subscriptions_helpers import assert_problem
from tests.support import SEED_BODY, Reply, call_event, create_subscription


async def test_null_event_filters_on_create_mean_no_filters(client, tenant, db):
    created = await create_subscription(client, tenant, eventFilters=None)
    assert created["eventFilters"] == []
    for status in ("ringing", "completed", "busy"):
        result = await ingest(client, call_event(tenant.workspace_id, status=status))
        assert result["deliveries"] == 1, status


async def test_null_event_filters_on_update_remove_the_filters(client, tenant):
    created = await create_subscription(client, tenant, **SEED_BODY)
    result = await ingest(client, call_event(tenant.workspace_id, status="ringing"))
    assert result["deliveries"] == 0  # the seed filters on completed and starting

    response = await client.patch(
        tenant.subscription(created["id"]), json={"eventFilters": None}, headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["eventFilters"] == []
    fetched = await client.get(tenant.subscription(created["id"]), headers=tenant.headers)
    assert fetched.json()["eventFilters"] == []
    result = await ingest(client, call_event(tenant.workspace_id, status="ringing"))
    assert result["deliveries"] == 1


async def test_urls_with_a_port_are_accepted(client, tenant):
    created = await create_subscription(client, tenant, url="https://example.com:8443/hook")
    assert created["url"] == "https://example.com:8443/hook"
    response = await client.patch(
        tenant.subscription(created["id"]),
        json={"url": "https://example.org:9443/other"},
        headers=tenant.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["url"] == "https://example.org:9443/other"


async def _failed_once_then_delivered(client, db, tenant, receiver):
    """A subscription to the receiver and one delivery that took two attempts: 500, then 200."""
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/bird")
    receiver.reply(Reply(500, "not yet"), Reply(200, "thanks"), path="/bird")
    result = await ingest(client, call_event(tenant.workspace_id, call_id="call-bird"))
    row = await wait_for_delivery(db, result["id"], sub["id"], state="succeeded", attempts=2)
    return sub, str(row["id"])


async def test_log_entries_carry_birds_names_beside_ours(client, db, tenant, receiver, dispatcher):
    sub, delivery_id = await _failed_once_then_delivered(client, db, tenant, receiver)
    response = await client.get(f"{tenant.subscription(sub['id'])}/logs", headers=tenant.headers)
    assert response.status_code == 200, response.text
    entries = response.json()["results"]
    assert [entry["attempt"] for entry in entries] == [2, 1]
    for entry in entries:
        assert entry["requestId"] == entry["deliveryId"] == delivery_id
        assert entry["attemptCount"] == entry["attempt"]
        assert entry["httpStatusCode"] == entry["responseStatusCode"]
    assert [entry["httpStatusCode"] for entry in entries] == [200, 500]


async def test_log_details_answer_every_attempt_of_one_delivery(
    client, db, tenant, other_tenant, receiver, dispatcher
):
    sub, delivery_id = await _failed_once_then_delivered(client, db, tenant, receiver)
    # Another delivery of the same subscription does not show up in this one's details.
    other = await ingest(client, call_event(tenant.workspace_id, call_id="call-other"))
    await wait_for_delivery(db, other["id"], sub["id"], state="succeeded", attempts=1)
    details = f"{tenant.subscription(sub['id'])}/logs/details"

    response = await client.get(details, params={"requestId": delivery_id}, headers=tenant.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"results"}
    assert [entry["attemptCount"] for entry in body["results"]] == [2, 1]
    assert {entry["requestId"] for entry in body["results"]} == {delivery_id}
    logs = await client.get(f"{tenant.subscription(sub['id'])}/logs", headers=tenant.headers)
    same = [entry for entry in logs.json()["results"] if entry["deliveryId"] == delivery_id]
    assert body["results"] == same  # the same entries as the logs

    assert_problem(await client.get(details, headers=tenant.headers), 422, field="requestId")
    for unknown in (str(uuid.uuid4()), "not-a-uuid"):
        response = await client.get(details, params={"requestId": unknown}, headers=tenant.headers)
        assert_problem(response, 404)

    # The delivery of this subscription, asked for through another subscription: 404.
    sibling = await create_subscription(client, tenant, url=f"{receiver.url}/sibling")
    response = await client.get(
        f"{tenant.subscription(sibling['id'])}/logs/details",
        params={"requestId": delivery_id},
        headers=tenant.headers,
    )
    assert_problem(response, 404)
    # ...or through another tenant's subscription, with that tenant's key: 404 too.
    theirs = await create_subscription(client, other_tenant)
    response = await client.get(
        f"{other_tenant.subscription(theirs['id'])}/logs/details",
        params={"requestId": delivery_id},
        headers=other_tenant.headers,
    )
    assert_problem(response, 404)
    # Without a valid key: 401 before anything else.
    assert_problem(await client.get(details, params={"requestId": delivery_id}), 401)


async def test_log_details_of_a_delivery_not_attempted_yet_are_empty(client, db, tenant):
    sub = await create_subscription(client, tenant)
    result = await ingest(client, call_event(tenant.workspace_id))
    delivery_id = await db.fetchval(
        "SELECT id FROM deliveries WHERE event_id = $1", uuid.UUID(result["id"])
    )
    response = await client.get(
        f"{tenant.subscription(sub['id'])}/logs/details",
        params={"requestId": str(delivery_id)},
        headers=tenant.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"results": []}
