"""Subscriptions the service makes inactive: long failure and 410 (SPEC §2 statusReason, §4)."""

from datetime import UTC, datetime, timedelta

import pytest

from tests.operations_helpers import AN_HOUR_LATER, delivery_of, ingest, wait_for_delivery
from tests.support import Reply, call_event, create_subscription
from voicehooks.dispatch.recorder import record_batch
from voicehooks.queue.claim import claim
from voicehooks.queue.results import AttemptRecord
from voicehooks.states import Verdict

INACTIVE_ERROR = "subscription inactive"


async def _get(client, tenant, sub) -> dict:
    response = await client.get(tenant.subscription(sub["id"]), headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def _patch_status(client, tenant, sub, status: str) -> dict:
    response = await client.patch(
        tenant.subscription(sub["id"]), json={"status": status}, headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    return response.json()


async def _failing_for(db, sub, interval: str) -> None:
    """Pretend the subscription's attempts have only failed for `interval`."""
    await db.execute(
        "UPDATE subscriptions SET failing_since = now() - $2::text::interval WHERE id = $1::uuid",
        sub["id"],
        interval,
    )


async def _one_attempt(client, db, tenant, sub, call_id: str) -> dict:
    """Ingest a call event and wait until its delivery has had one attempt recorded."""
    result = await ingest(client, call_event(tenant.workspace_id, call_id=call_id))
    assert result["deliveries"] == 1
    await wait_for_delivery(db, result["id"], sub["id"], attempts=1)
    return result


async def _deliveries(client, tenant, sub) -> list[dict]:
    response = await client.get(
        f"{tenant.subscription(sub['id'])}/deliveries", headers=tenant.headers
    )
    return response.json()["results"]


async def test_failing_past_the_limit_makes_the_subscription_inactive(
    client, db, tenant, receiver, dispatcher
):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    # The first call's attempt is told to come back in an hour: it stays pending meanwhile.
    receiver.reply(Reply(503, headers=AN_HOUR_LATER), Reply(500))
    waiting = await _one_attempt(client, db, tenant, sub, "call-waiting")
    assert (await _get(client, tenant, sub))["status"] == "active"
    await _failing_for(db, sub, "6 days")
    failing_since = (datetime.now(UTC) - timedelta(days=6)).strftime("%Y-%m-%d")

    last = await _one_attempt(client, db, tenant, sub, "call-last-straw")

    current = await _get(client, tenant, sub)
    assert current["status"] == "inactive"
    assert current["statusReason"].startswith("failing since ")
    assert failing_since in current["statusReason"]
    for result in (waiting, last):
        row = await delivery_of(db, result["id"], sub["id"])
        assert (row["state"], row["attempts"]) == ("failed", 1)
    listed = await _deliveries(client, tenant, sub)
    assert {(d["state"], d["nextAttemptAt"]) for d in listed} == {("failed", None)}
    assert {d["error"] for d in listed} == {INACTIVE_ERROR}
    # An inactive subscription receives no new events.
    later = await ingest(client, call_event(tenant.workspace_id, call_id="call-after"))
    assert later["deliveries"] == 0
    assert len(receiver.requests) == 2


async def test_failing_for_less_than_the_limit_keeps_it_active(
    client, db, tenant, receiver, dispatcher
):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    receiver.reply(Reply(503, headers=AN_HOUR_LATER))
    await _failing_for(db, sub, "4 days 23 hours")
    result = await _one_attempt(client, db, tenant, sub, "call-1")

    current = await _get(client, tenant, sub)
    assert (current["status"], current["statusReason"]) == ("active", None)
    assert (await delivery_of(db, result["id"], sub["id"]))["state"] == "pending"


@pytest.mark.parametrize("settings_overrides", [{"auto_disable_after": 3600}])
async def test_the_limit_is_a_setting(client, db, tenant, receiver, dispatcher):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    receiver.reply(Reply(500))
    await _failing_for(db, sub, "2 hours")
    await _one_attempt(client, db, tenant, sub, "call-1")

    current = await _get(client, tenant, sub)
    assert current["status"] == "inactive"
    assert current["statusReason"].startswith("failing since ")


async def test_a_success_resets_the_clock(client, db, tenant, receiver, dispatcher):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    await _failing_for(db, sub, "6 days")
    receiver.reply(Reply(200), Reply(500))
    await _one_attempt(client, db, tenant, sub, "call-ok")
    # Failing again right after a success is a fresh start, far from the limit.
    await _one_attempt(client, db, tenant, sub, "call-down")

    current = await _get(client, tenant, sub)
    assert (current["status"], current["statusReason"]) == ("active", None)


async def test_reactivating_clears_the_reason_and_the_clock(
    client, db, tenant, receiver, dispatcher
):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    receiver.reply(Reply(500))
    await _failing_for(db, sub, "6 days")
    await _one_attempt(client, db, tenant, sub, "call-1")
    assert (await _get(client, tenant, sub))["status"] == "inactive"

    reactivated = await _patch_status(client, tenant, sub, "active")
    assert (reactivated["status"], reactivated["statusReason"]) == ("active", None)
    assert (await _get(client, tenant, sub))["statusReason"] is None

    # The old failures no longer count: one more failure does not disable it again.
    receiver.reply(Reply(503, headers=AN_HOUR_LATER))
    await _one_attempt(client, db, tenant, sub, "call-2")
    current = await _get(client, tenant, sub)
    assert (current["status"], current["statusReason"]) == ("active", None)


async def test_a_user_deactivation_has_no_reason_and_fails_pending_deliveries(
    client, db, tenant, receiver, dispatcher
):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    receiver.reply(Reply(503, headers=AN_HOUR_LATER))
    result = await _one_attempt(client, db, tenant, sub, "call-1")

    deactivated = await _patch_status(client, tenant, sub, "inactive")
    assert (deactivated["status"], deactivated["statusReason"]) == ("inactive", None)
    assert (await _get(client, tenant, sub))["statusReason"] is None
    row = await delivery_of(db, result["id"], sub["id"])
    assert (row["state"], row["attempts"], row["next_attempt_at"]) == ("failed", 1, None)
    [listed] = await _deliveries(client, tenant, sub)
    assert listed["error"] == INACTIVE_ERROR


async def test_an_endpoint_answering_410_deactivates_the_subscription(
    client, db, tenant, receiver, dispatcher
):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    receiver.reply(Reply(503, headers=AN_HOUR_LATER), Reply(410, "gone"))
    waiting = await _one_attempt(client, db, tenant, sub, "call-waiting")
    gone = await _one_attempt(client, db, tenant, sub, "call-gone")

    current = await _get(client, tenant, sub)
    assert current["status"] == "inactive"
    assert "410" in current["statusReason"]
    # No retry after a 410, and the other pending delivery is stopped as well.
    gone_row = await delivery_of(db, gone["id"], sub["id"])
    assert (gone_row["state"], gone_row["attempts"]) == ("failed", 1)
    waiting_row = await delivery_of(db, waiting["id"], sub["id"])
    assert (waiting_row["state"], waiting_row["last_error"]) == ("failed", INACTIVE_ERROR)
    assert len(receiver.requests) == 2

    # The customer fixes the endpoint and turns the subscription back on.
    reactivated = await _patch_status(client, tenant, sub, "active")
    assert reactivated["statusReason"] is None
    receiver.reply(Reply(200))
    result = await ingest(client, call_event(tenant.workspace_id, call_id="call-back"))
    await wait_for_delivery(db, result["id"], sub["id"], state="succeeded")


async def test_a_success_recorded_with_a_failure_still_resets_the_clock(client, db, tenant):
    """Two answers of one subscription recorded in the same batch: one 200, one 500."""
    sub = await create_subscription(client, tenant, url="http://127.0.0.1:9/hook")
    for call_id in ("call-ok", "call-down"):
        await ingest(client, call_event(tenant.workspace_id, call_id=call_id))
    await _failing_for(db, sub, "6 days")
    claimed = await claim(db, limit=10, host_free={}, per_host=64, lease_seconds=30)
    assert len(claimed) == 2
    now = datetime.now(UTC)
    ok, down = sorted(claimed, key=lambda delivery: delivery.call_id != "call-ok")

    disabled, _ = await record_batch(
        db,
        [
            AttemptRecord(ok, Verdict.SUCCEEDED, 0.0, now, 5, 200, None, "ok"),
            AttemptRecord(down, Verdict.RETRY, 0.2, now, 5, 500, None, "down"),
        ],
        auto_disable_after=432000,
    )

    assert disabled == []
    current = await _get(client, tenant, sub)
    assert (current["status"], current["statusReason"]) == ("active", None)
