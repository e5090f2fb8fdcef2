"""Deliveries of a subscription and their replay: list, retry, recover, test (SPEC §2)."""

import uuid
from datetime import UTC, datetime, timedelta, timezone

from tests.operations_helpers import (
    AN_HOUR_LATER,
    delivery_of,
    header,
    ingest,
    standard_verifies,
    wait_for_delivery,
)
from tests.support import (
    INGEST_TOKEN,
    Reply,
    bootstrap_tenant,
    call_event,
    create_subscription,
    wait_until,
)
from voicehooks.voice import CALL_STATUSES

KEY = "replay-signing-key-0001"
CHANNEL = "0d3f5a4e-2f7e-4c4b-9d59-6f1f3c1e8a10"
MAX_ATTEMPTS = 4  # the test settings' retry_delays "0.2,0.2,0.2"


def _deliveries(tenant, sub) -> str:
    return f"{tenant.subscription(sub['id'])}/deliveries"


async def _logs(client, tenant, sub, delivery_id) -> list[dict]:
    response = await client.get(
        f"{tenant.subscription(sub['id'])}/logs", params={"limit": 100}, headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    return [entry for entry in response.json()["results"] if entry["deliveryId"] == delivery_id]


async def _delivered(client, db, tenant, sub, receiver, call_id, reply, **wait):
    """Ingest one call event while the receiver answers `reply`; wait for its delivery."""
    receiver.reply(*reply)
    result = await ingest(client, call_event(tenant.workspace_id, call_id=call_id))
    assert result["deliveries"] == 1
    row = await wait_for_delivery(db, result["id"], sub["id"], **wait)
    return result["id"], str(row["id"])


async def _failed(client, db, tenant, sub, receiver, call_id):
    return await _delivered(
        client,
        db,
        tenant,
        sub,
        receiver,
        call_id,
        [Reply(500, "down")],
        state="failed",
        attempts=MAX_ATTEMPTS,
    )


async def _succeeded(client, db, tenant, sub, receiver, call_id):
    return await _delivered(
        client, db, tenant, sub, receiver, call_id, [Reply(200)], state="succeeded", attempts=1
    )


async def _pending(client, db, tenant, sub, receiver, call_id):
    """A delivery whose first attempt got 503 + Retry-After: it waits an hour, still pending."""
    return await _delivered(
        client,
        db,
        tenant,
        sub,
        receiver,
        call_id,
        [Reply(503, "later", headers=AN_HOUR_LATER)],
        state="pending",
        attempts=1,
    )


async def test_deliveries_list_states_newest_first_with_filter_and_pages(
    client, db, tenant, receiver, dispatcher
):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook", signingKey=KEY)
    ok_event, ok_id = await _succeeded(client, db, tenant, sub, receiver, "call-ok")
    failed_event, failed_id = await _failed(client, db, tenant, sub, receiver, "call-down")
    pending_event, pending_id = await _pending(client, db, tenant, sub, receiver, "call-later")

    response = await client.get(_deliveries(tenant, sub), headers=tenant.headers)
    assert response.status_code == 200, response.text
    page = response.json()
    assert "nextPageToken" not in page
    listed = [(d["id"], d["eventId"], d["state"], d["attempts"]) for d in page["results"]]
    assert listed == [
        (pending_id, pending_event, "pending", 1),
        (failed_id, failed_event, "failed", MAX_ATTEMPTS),
        (ok_id, ok_event, "succeeded", 1),
    ]
    by_state = {d["state"]: d for d in page["results"]}
    assert by_state["succeeded"]["nextAttemptAt"] is None
    assert by_state["failed"]["nextAttemptAt"] is None
    next_at = datetime.fromisoformat(by_state["pending"]["nextAttemptAt"])
    assert next_at > datetime.now(UTC) + timedelta(minutes=50)
    for delivery in page["results"]:
        assert datetime.fromisoformat(delivery["createdAt"]).tzinfo is not None

    for state, expected in (("failed", failed_id), ("succeeded", ok_id), ("pending", pending_id)):
        response = await client.get(
            _deliveries(tenant, sub), params={"state": state}, headers=tenant.headers
        )
        assert [d["id"] for d in response.json()["results"]] == [expected]
    unknown_state = await client.get(
        _deliveries(tenant, sub), params={"state": "exploded"}, headers=tenant.headers
    )
    assert unknown_state.status_code == 422

    first = (
        await client.get(_deliveries(tenant, sub), params={"limit": 2}, headers=tenant.headers)
    ).json()
    assert [d["id"] for d in first["results"]] == [pending_id, failed_id]
    second = (
        await client.get(
            _deliveries(tenant, sub),
            params={"limit": 2, "pageToken": first["nextPageToken"]},
            headers=tenant.headers,
        )
    ).json()
    assert [d["id"] for d in second["results"]] == [ok_id]
    assert "nextPageToken" not in second


async def test_retry_of_a_failed_delivery_makes_exactly_one_more_attempt(
    client, db, tenant, receiver, dispatcher
):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook", signingKey=KEY)
    event_id, delivery_id = await _failed(client, db, tenant, sub, receiver, "call-retry")
    assert len(receiver.requests) == MAX_ATTEMPTS

    # Still failing: the extra attempt is made once, then the delivery is final again.
    response = await client.post(
        f"{_deliveries(tenant, sub)}/{delivery_id}/retry", headers=tenant.headers
    )
    assert response.status_code == 202, response.text
    assert response.json()["id"] == delivery_id
    row = await wait_for_delivery(
        db, event_id, sub["id"], state="failed", attempts=MAX_ATTEMPTS + 1
    )
    assert row["next_attempt_at"] is None
    logs = await _logs(client, tenant, sub, delivery_id)
    assert [entry["attempt"] for entry in logs] == [5, 4, 3, 2, 1]
    assert logs[0]["executionStatus"] == "failed"
    assert logs[0]["responseStatusCode"] == 500

    # No schedule follows the retry: a later failing call runs its whole schedule meanwhile.
    await _failed(client, db, tenant, sub, receiver, "call-barrier")
    assert (await delivery_of(db, event_id, sub["id"]))["attempts"] == MAX_ATTEMPTS + 1
    assert len(receiver.requests) == 2 * MAX_ATTEMPTS + 1

    # Now the receiver is back: one more retry succeeds, with the same delivery id.
    receiver.reply(Reply(200))
    response = await client.post(
        f"{_deliveries(tenant, sub)}/{delivery_id}/retry", headers=tenant.headers
    )
    assert response.status_code == 202, response.text
    await wait_for_delivery(db, event_id, sub["id"], state="succeeded", attempts=MAX_ATTEMPTS + 2)
    logs = await _logs(client, tenant, sub, delivery_id)
    assert logs[0]["attempt"] == MAX_ATTEMPTS + 2
    assert logs[0]["executionStatus"] == "succeeded"
    assert header(receiver.requests[-1], "webhook-id") == delivery_id
    listed = (
        await client.get(
            _deliveries(tenant, sub), params={"state": "succeeded"}, headers=tenant.headers
        )
    ).json()["results"]
    assert [(d["id"], d["attempts"], d["nextAttemptAt"]) for d in listed] == [
        (delivery_id, MAX_ATTEMPTS + 2, None)
    ]


async def test_retry_of_a_succeeded_delivery_sends_it_again(
    client, db, tenant, receiver, dispatcher
):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook", signingKey=KEY)
    event_id, delivery_id = await _succeeded(client, db, tenant, sub, receiver, "call-again")

    response = await client.post(
        f"{_deliveries(tenant, sub)}/{delivery_id}/retry", headers=tenant.headers
    )
    assert response.status_code == 202, response.text
    await wait_for_delivery(db, event_id, sub["id"], state="succeeded", attempts=2)
    assert len(receiver.requests) == 2
    first, again = receiver.requests
    assert again.body == first.body
    assert header(again, "webhook-id") == header(first, "webhook-id") == delivery_id
    assert standard_verifies(KEY, again)
    logs = await _logs(client, tenant, sub, delivery_id)
    assert [(entry["attempt"], entry["executionStatus"]) for entry in logs] == [
        (2, "succeeded"),
        (1, "succeeded"),
    ]


async def test_retry_of_a_pending_delivery_is_a_conflict(client, db, tenant, receiver, dispatcher):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook", signingKey=KEY)
    event_id, delivery_id = await _pending(client, db, tenant, sub, receiver, "call-pending")

    response = await client.post(
        f"{_deliveries(tenant, sub)}/{delivery_id}/retry", headers=tenant.headers
    )
    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    row = await delivery_of(db, event_id, sub["id"])
    assert (row["state"], row["attempts"]) == ("pending", 1)
    assert row["next_attempt_at"] > datetime.now(UTC) + timedelta(minutes=50)


async def test_retry_of_a_delivery_that_is_not_there_is_not_found(
    client, db, tenant, other_tenant, database_url, receiver, dispatcher
):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook", signingKey=KEY)
    sibling = await create_subscription(
        client, tenant, url=f"{receiver.url}/sibling", event="voice.outbound"
    )
    _, delivery_id = await _succeeded(client, db, tenant, sub, receiver, "call-mine")
    foreign = await create_subscription(client, other_tenant, url=f"{receiver.url}/foreign")
    second_workspace = await bootstrap_tenant(database_url, "acme", "second")
    assert second_workspace.organization_id == tenant.organization_id
    elsewhere = await create_subscription(client, second_workspace, url=f"{receiver.url}/elsewhere")

    attempts = [
        # unknown and malformed delivery ids
        (tenant, f"{_deliveries(tenant, sub)}/{uuid.uuid4()}/retry"),
        (tenant, f"{_deliveries(tenant, sub)}/not-a-uuid/retry"),
        # the delivery under another subscription of the same workspace
        (tenant, f"{_deliveries(tenant, sibling)}/{delivery_id}/retry"),
        # the delivery under a subscription of another workspace of the same organization
        (tenant, f"{_deliveries(second_workspace, elsewhere)}/{delivery_id}/retry"),
        # another organization, through its own subscription or through ours
        (other_tenant, f"{_deliveries(other_tenant, foreign)}/{delivery_id}/retry"),
        (other_tenant, f"{_deliveries(tenant, sub)}/{delivery_id}/retry"),
    ]
    for who, path in attempts:
        response = await client.post(path, headers=who.headers)
        assert response.status_code == 404, (path, response.text)
    other_org_list = await client.get(_deliveries(tenant, sub), headers=other_tenant.headers)
    assert other_org_list.status_code == 404
    assert len(receiver.requests) == 1  # nothing was sent again


async def test_recover_requeues_the_failed_deliveries_since_a_time(
    client, db, tenant, receiver, dispatcher
):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook", signingKey=KEY)
    old_event, old_id = await _failed(client, db, tenant, sub, receiver, "call-old")
    edge_event, edge_id = await _failed(client, db, tenant, sub, receiver, "call-edge")
    recent_event, recent_id = await _failed(client, db, tenant, sub, receiver, "call-recent")
    ok_event, _ = await _succeeded(client, db, tenant, sub, receiver, "call-fine")
    since = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    # A delivery is created with its event: both move back in time.
    for delivery_id, created_at in ((old_id, since - timedelta(milliseconds=1)), (edge_id, since)):
        await db.execute(
            "WITH moved AS (UPDATE deliveries SET created_at = $2 WHERE id = $1::uuid"
            " RETURNING event_id) UPDATE events SET created_at = $2 FROM moved"
            " WHERE events.id = moved.event_id",
            delivery_id,
            created_at,
        )
    sent_before = len(receiver.requests)

    receiver.reply(Reply(200))
    response = await client.post(
        f"{tenant.subscription(sub['id'])}/recover",
        json={"since": since.isoformat().replace("+00:00", "Z")},
        headers=tenant.headers,
    )
    assert response.status_code == 202, response.text
    assert response.json() == {"requeued": 2}

    for event_id in (edge_event, recent_event):
        await wait_for_delivery(db, event_id, sub["id"], state="succeeded", attempts=5)
    old = await delivery_of(db, old_event, sub["id"])
    assert (old["state"], old["attempts"]) == ("failed", MAX_ATTEMPTS)
    ok = await delivery_of(db, ok_event, sub["id"])
    assert (ok["state"], ok["attempts"]) == ("succeeded", 1)
    resent = {header(request, "webhook-id") for request in receiver.requests[sent_before:]}
    assert resent == {edge_id, recent_id}
    for delivery_id in (edge_id, recent_id):
        logs = await _logs(client, tenant, sub, delivery_id)
        assert (logs[0]["attempt"], logs[0]["executionStatus"]) == (5, "succeeded")

    # Nothing failed since: recovering again re-queues nothing.
    again = await client.post(
        f"{tenant.subscription(sub['id'])}/recover",
        json={"since": since.isoformat()},
        headers=tenant.headers,
    )
    assert again.status_code == 202
    assert again.json() == {"requeued": 0}


async def test_recover_refuses_a_missing_malformed_or_future_since(client, tenant, receiver):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook", signingKey=KEY)
    path = f"{tenant.subscription(sub['id'])}/recover"
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    for body in (
        {},
        {"since": None},
        {"since": "yesterday"},
        {"since": "2024-13-01T00:00:00Z"},
        {"since": "2024-01-01T00:00:00"},  # RFC 3339 needs an offset
        {"since": future},
    ):
        response = await client.post(path, json=body, headers=tenant.headers)
        assert response.status_code == 422, (body, response.text)
        problem = response.json()
        assert response.headers["content-type"].startswith("application/problem+json")
        assert [error["field"] for error in problem["errors"]] == ["since"], body
    not_json = await client.post(
        path, content=b"since=yesterday", headers={**tenant.headers, "content-type": "text/plain"}
    )
    assert not_json.status_code == 422


async def test_test_event_reaches_only_that_subscription_signed_and_valid(
    client, db, tenant, receiver, dispatcher
):
    sub = await create_subscription(
        client,
        tenant,
        url=f"{receiver.url}/hook",
        signingKey=KEY,
        eventFilters=[
            {"key": "status", "value": "completed"},
            {"key": "channelId", "value": CHANNEL},
            {"key": "status", "value": "starting"},
        ],
    )
    twin = await create_subscription(client, tenant, url=f"{receiver.url}/twin")

    response = await client.post(f"{tenant.subscription(sub['id'])}/test", headers=tenant.headers)
    assert response.status_code == 202, response.text
    delivery_id = response.json()["deliveryId"]
    uuid.UUID(delivery_id)

    [received] = await wait_until(lambda: receiver.to("/hook"))
    assert header(received, "webhook-id") == delivery_id
    assert header(received, "content-type") == "application/json"
    assert standard_verifies(KEY, received)
    body = received.json()
    assert body["service"] == "channels"
    assert body["event"] == "voice.inbound"
    payload = body["payload"]
    assert payload["channelId"] == CHANNEL
    assert payload["status"] == "completed"  # the first status filter
    assert isinstance(payload["id"], str) and payload["id"]

    listed = await wait_until(lambda: _listed_state(client, tenant, sub, delivery_id, "succeeded"))
    assert listed["attempts"] == 1
    twin_deliveries = await client.get(_deliveries(tenant, twin), headers=tenant.headers)
    assert twin_deliveries.json()["results"] == []
    assert receiver.to("/twin") == []


async def _listed_state(client, tenant, sub, delivery_id, state):
    response = await client.get(_deliveries(tenant, sub), headers=tenant.headers)
    for delivery in response.json()["results"]:
        if delivery["id"] == delivery_id and delivery["state"] == state:
            return delivery
    return None


async def test_test_event_without_filters_is_a_valid_call_of_the_event(
    client, tenant, receiver, dispatcher
):
    sub = await create_subscription(
        client, tenant, url=f"{receiver.url}/out", event="voice.outbound", signingKey=KEY
    )
    response = await client.post(f"{tenant.subscription(sub['id'])}/test", headers=tenant.headers)
    assert response.status_code == 202, response.text

    [received] = await wait_until(lambda: receiver.to("/out"))
    assert standard_verifies(KEY, received)
    body = received.json()
    assert body["event"] == "voice.outbound"
    payload = body["payload"]
    assert payload["status"] in CALL_STATUSES["voice.outbound"]
    uuid.UUID(payload["channelId"])
    assert isinstance(payload["id"], str) and payload["id"]


async def test_replay_operations_on_an_inactive_subscription_are_conflicts(
    client, db, tenant, receiver, dispatcher
):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook", signingKey=KEY)
    _, failed_id = await _failed(client, db, tenant, sub, receiver, "call-before")
    deactivated = await client.patch(
        tenant.subscription(sub["id"]), json={"status": "inactive"}, headers=tenant.headers
    )
    assert deactivated.status_code == 200
    sent = len(receiver.requests)

    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    for path, body in (
        (f"{_deliveries(tenant, sub)}/{failed_id}/retry", None),
        (f"{tenant.subscription(sub['id'])}/recover", {"since": since}),
        (f"{tenant.subscription(sub['id'])}/test", None),
    ):
        response = await client.post(path, json=body, headers=tenant.headers)
        assert response.status_code == 409, (path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    listed = (await client.get(_deliveries(tenant, sub), headers=tenant.headers)).json()["results"]
    assert [(d["id"], d["state"], d["attempts"]) for d in listed] == [
        (failed_id, "failed", MAX_ATTEMPTS)
    ]
    assert len(receiver.requests) == sent


async def test_recovered_deliveries_of_one_call_are_sent_in_order(
    client, db, tenant, receiver, dispatcher
):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook", signingKey=KEY)
    receiver.reply(Reply(500))
    first = await ingest(client, call_event(tenant.workspace_id, call_id="c1", status="ringing"))
    second = await ingest(client, call_event(tenant.workspace_id, call_id="c1", status="ongoing"))
    for result in (first, second):
        await wait_for_delivery(db, result["id"], sub["id"], state="failed", attempts=MAX_ATTEMPTS)
    sent = len(receiver.requests)

    receiver.reply(Reply(200, delay=0.2))
    response = await client.post(
        f"{tenant.subscription(sub['id'])}/recover",
        json={"since": (datetime.now(UTC) - timedelta(minutes=5)).isoformat()},
        headers=tenant.headers,
    )
    assert response.json() == {"requeued": 2}
    await wait_for_delivery(db, second["id"], sub["id"], state="succeeded")
    resent = receiver.requests[sent:]
    assert [request.json()["payload"]["status"] for request in resent] == ["ringing", "ongoing"]
    assert resent[1].at >= resent[0].at + 0.2  # the later one waited for the earlier answer


async def test_deliveries_stopped_by_deactivation_can_be_recovered_after_reactivation(
    client, db, tenant, receiver, dispatcher
):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook", signingKey=KEY)
    event_id, delivery_id = await _pending(client, db, tenant, sub, receiver, "call-stopped")
    since = datetime.now(UTC) - timedelta(minutes=5)
    for status in ("inactive", "active"):
        response = await client.patch(
            tenant.subscription(sub["id"]), json={"status": status}, headers=tenant.headers
        )
        assert response.status_code == 200
    [stopped] = (await client.get(_deliveries(tenant, sub), headers=tenant.headers)).json()[
        "results"
    ]
    assert (stopped["state"], stopped["error"]) == ("failed", "subscription inactive")

    receiver.reply(Reply(200))
    response = await client.post(
        f"{tenant.subscription(sub['id'])}/recover",
        json={"since": since.astimezone(timezone(timedelta(hours=2))).isoformat()},
        headers=tenant.headers,
    )
    assert response.json() == {"requeued": 1}
    await wait_for_delivery(db, event_id, sub["id"], state="succeeded", attempts=2)
    assert header(receiver.requests[-1], "webhook-id") == delivery_id
    [recovered] = (await client.get(_deliveries(tenant, sub), headers=tenant.headers)).json()[
        "results"
    ]
    assert (recovered["state"], recovered["error"], recovered["nextAttemptAt"]) == (
        "succeeded",
        None,
        None,
    )


async def test_deliveries_of_one_batch_are_listed_newest_first(client, tenant, db):
    # One batch is one transaction: every row shares its created_at, yet order still holds.
    sub = await create_subscription(client, tenant, url="https://example.com/hook")
    events = [call_event(tenant.workspace_id, call_id=f"call-{n}") for n in range(7)]
    response = await client.post(
        "/internal/v1/events/batch",
        json={"events": events},
        headers={"Authorization": f"Bearer {INGEST_TOKEN}"},
    )
    assert response.status_code == 202, response.text
    event_ids = [result["id"] for result in response.json()["results"]]

    listed, token = [], None
    while True:
        params = {"limit": 3, **({"pageToken": token} if token else {})}
        page = await client.get(_deliveries(tenant, sub), params=params, headers=tenant.headers)
        assert page.status_code == 200, page.text
        listed += [delivery["eventId"] for delivery in page.json()["results"]]
        token = page.json().get("nextPageToken")
        if not token:
            break
    assert listed == event_ids[::-1]
