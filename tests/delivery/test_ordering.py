"""In order per call (SPEC §4): for one subscription, deliveries sharing `payload.id` are
attempted in ingestion order; a later one waits for the earlier one; other calls never wait."""

import pytest

from tests.delivery_helpers import CallReceiver, deliveries, ingest, ingest_batch, logs
from tests.support import call_event, create_subscription, wait_until


@pytest.fixture
async def call_receiver():
    async with CallReceiver.running() as running:
        yield running


def sent(receiver: CallReceiver, call_id: str) -> list[str]:
    return [status for call, status in receiver.calls() if call == call_id]


@pytest.mark.parametrize("settings_overrides", [{"retry_delays": "1.0"}])
async def test_later_status_waits_for_the_earlier_one_other_calls_flow(
    client, tenant, call_receiver, dispatcher
):
    receiver = call_receiver
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    receiver.fail[("A", "ringing")] = 1  # 500 once, then 200
    ws = tenant.workspace_id

    await ingest(client, call_event(ws, call_id="A", status="ringing"))
    ongoing_a = await ingest(client, call_event(ws, call_id="A", status="ongoing"))
    await wait_until(lambda: sent(receiver, "A"))  # A's first attempt failed

    # While A ringing waits ~1 s for its retry, A ongoing waits too ...
    async def first_attempt_recorded():
        return len(await logs(client, tenant, sub["id"])) == 1

    await wait_until(first_attempt_recorded)
    waiting = {d["eventId"]: d for d in await deliveries(client, tenant, sub["id"])}
    assert waiting[ongoing_a["id"]]["state"] == "pending"
    assert waiting[ongoing_a["id"]]["nextAttemptAt"] is None  # not scheduled: it waits
    assert waiting[ongoing_a["id"]]["attempts"] == 0

    # ... and another call to the same subscription goes straight through.
    await ingest_batch(
        client,
        [
            call_event(ws, call_id="B", status="ringing"),
            call_event(ws, call_id="B", status="ongoing"),
        ],
    )
    await wait_until(lambda: len(sent(receiver, "B")) == 2)
    assert sent(receiver, "A") == ["ringing"]  # the retry of A has not happened yet

    await wait_until(lambda: len(sent(receiver, "A")) == 3)
    assert sent(receiver, "A") == ["ringing", "ringing", "ongoing"]
    assert sent(receiver, "B") == ["ringing", "ongoing"]
    assert receiver.calls() == [
        ("A", "ringing"),
        ("B", "ringing"),
        ("B", "ongoing"),
        ("A", "ringing"),
        ("A", "ongoing"),
    ]

    async def all_succeeded():
        found = await deliveries(client, tenant, sub["id"])
        return len(found) == 4 and all(d["state"] == "succeeded" for d in found)

    await wait_until(all_succeeded)


@pytest.mark.parametrize("settings_overrides", [{"retry_delays": "0.6,0.6"}])
async def test_batch_with_several_statuses_of_one_call(client, tenant, call_receiver, dispatcher):
    receiver = call_receiver
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    receiver.fail[("A", "starting")] = 2  # two failures, then 200
    ws = tenant.workspace_id
    a_statuses = ["starting", "ringing", "ongoing", "completed"]
    items = [
        call_event(ws, call_id="A", status="starting"),
        call_event(ws, call_id="B", status="ringing"),
        call_event(ws, call_id="A", status="ringing"),
        call_event(ws, call_id="B", status="ongoing"),
        call_event(ws, call_id="A", status="ongoing"),
        call_event(ws, call_id="B", status="completed"),
        call_event(ws, call_id="A", status="completed"),
    ]
    results = await ingest_batch(client, items)
    assert [r["deliveries"] for r in results] == [1] * len(items)

    # B is done while A's first status is still between its retries (>= 2 x 0.48 s).
    await wait_until(lambda: len(sent(receiver, "B")) == 3)
    assert sent(receiver, "B") == ["ringing", "ongoing", "completed"]
    assert set(sent(receiver, "A")) == {"starting"}

    await wait_until(lambda: len(sent(receiver, "A")) == 6, timeout=15)
    assert sent(receiver, "A") == ["starting", "starting", *a_statuses]

    async def all_succeeded():
        found = await deliveries(client, tenant, sub["id"])
        return len(found) == len(items) and all(d["state"] == "succeeded" for d in found)

    await wait_until(all_succeeded)


async def test_later_status_goes_once_the_earlier_one_finally_failed(
    client, tenant, call_receiver, dispatcher
):
    receiver = call_receiver
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    receiver.fail[("A", "ringing")] = 100  # never succeeds
    first, second = await ingest_batch(
        client,
        [
            call_event(tenant.workspace_id, call_id="A", status="ringing"),
            call_event(tenant.workspace_id, call_id="A", status="completed"),
        ],
    )
    await wait_until(lambda: "completed" in sent(receiver, "A"))
    attempts = 1 + 3  # the test settings retry three times
    assert sent(receiver, "A") == ["ringing"] * attempts + ["completed"]

    async def both_final():
        found = {d["eventId"]: d for d in await deliveries(client, tenant, sub["id"])}
        return all(d["state"] != "pending" for d in found.values()) and found

    found = await wait_until(both_final)
    assert found[first["id"]]["state"] == "failed"
    assert found[first["id"]]["attempts"] == attempts
    assert found[second["id"]]["state"] == "succeeded"


async def test_order_is_per_subscription(client, tenant, call_receiver, dispatcher):
    """The same call to two subscriptions: one failing does not hold back the other."""
    receiver = call_receiver
    await create_subscription(client, tenant, url=f"{receiver.url}/slow")
    await create_subscription(client, tenant, url=f"{receiver.url}/fast")
    receiver.fail[("/slow", "A", "ringing")] = 100
    await ingest_batch(
        client,
        [
            call_event(tenant.workspace_id, call_id="A", status="ringing"),
            call_event(tenant.workspace_id, call_id="A", status="completed"),
        ],
    )
    await wait_until(lambda: len(receiver.to("/fast")) == 2)
    assert [r.json()["payload"]["status"] for r in receiver.to("/fast")] == [
        "ringing",
        "completed",
    ]
    # Meanwhile /slow's first status still retries and its second has not gone out.
    assert {r.json()["payload"]["status"] for r in receiver.to("/slow")} == {"ringing"}
