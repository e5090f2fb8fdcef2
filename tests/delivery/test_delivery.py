"""Delivery (SPEC §4): body, headers, signatures, retries, final states, logs (SPEC §2)."""

import base64
import hashlib
import hmac
import itertools
import json
import time
from datetime import datetime
from email.utils import formatdate

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

import voicehooks
from tests.delivery_helpers import (
    closed_port,
    deliveries,
    get_page,
    ingest,
    ingest_batch,
    logs,
    running_dispatcher,
)
from tests.support import Reply, call_event, create_subscription, wait_until

SIGNING_KEY = "a-signing-key-for-the-tests-0001"


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def bird_signature(signing_key: str, timestamp: str, url: str, body: bytes) -> str:
    """SPEC §4 in its own words: base64(HMAC-SHA256(key = signingKey as UTF-8 bytes,
    msg = timestamp + "\\n" + url + "\\n" + SHA-256(body) as 32 raw bytes))."""
    message = timestamp.encode() + b"\n" + url.encode() + b"\n" + hashlib.sha256(body).digest()
    mac = hmac.new(signing_key.encode("utf-8"), message, hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


async def final_delivery(client, tenant, subscription_id: str, *, timeout: float = 10.0) -> dict:
    async def final():
        found = await deliveries(client, tenant, subscription_id)
        return found and found[0]["state"] != "pending" and found[0]

    return await wait_until(final, timeout=timeout)


async def attempts_logged(client, tenant, subscription_id: str, n: int, **params) -> list[dict]:
    async def enough():
        found = await logs(client, tenant, subscription_id, **params)
        return len(found) >= n and found

    return await wait_until(enough)


# -- what is sent ----------------------------------------------------------------------------


async def test_body_headers_and_both_signatures(client, tenant, receiver, dispatcher):
    url = f"{receiver.url}/hook?customer=42"
    sub = await create_subscription(client, tenant, url=url, signingKey=SIGNING_KEY)
    item = call_event(tenant.workspace_id, status="ongoing", legs=[{"n": 1}])
    await ingest(client, item)
    (request,) = await wait_until(lambda: receiver.to("/hook"))
    received_at = time.time()

    assert json.loads(request.body) == {
        "service": "channels",
        "event": "voice.inbound",
        "payload": item["payload"],
    }
    assert list(json.loads(request.body)) == ["service", "event", "payload"]

    headers = lower(request.headers)
    (delivery,) = await deliveries(client, tenant, sub["id"])
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == f"voicehooks/{voicehooks.__version__}"
    assert headers["messagebird-request-id"] == headers["webhook-id"] == delivery["id"]
    timestamp = headers["messagebird-request-timestamp"]
    assert timestamp.isdigit() and abs(int(timestamp) - received_at) <= 5
    assert headers["webhook-timestamp"] == timestamp

    # Standard Webhooks, checked by the reference package a receiver would use.
    verified = Webhook(SIGNING_KEY.encode()).verify(request.body, request.headers)
    assert verified["payload"] == item["payload"]
    with pytest.raises(WebhookVerificationError):
        Webhook(b"another-key-entirely").verify(request.body, request.headers)
    # Bird's signature, computed here from the words of the spec.
    assert headers["messagebird-signature"] == bird_signature(
        SIGNING_KEY, timestamp, url, request.body
    )
    assert headers["messagebird-signature"] != bird_signature(
        SIGNING_KEY, timestamp, url, request.body + b" "
    )


@pytest.mark.parametrize("settings_overrides", [{"retry_delays": "1.5"}])
async def test_retry_then_success_same_id_fresh_timestamp(client, tenant, receiver, dispatcher):
    url = f"{receiver.url}/hook"
    sub = await create_subscription(client, tenant, url=url, signingKey=SIGNING_KEY)
    receiver.reply(Reply(500, body="try again"), Reply(200, body="thanks"))
    await ingest(client, call_event(tenant.workspace_id))

    delivery = await final_delivery(client, tenant, sub["id"])
    assert delivery["state"] == "succeeded"
    assert delivery["attempts"] == 2 and delivery["nextAttemptAt"] is None

    first, second = receiver.to("/hook")
    ids = {lower(r.headers)["webhook-id"] for r in (first, second)}
    assert ids == {delivery["id"]}
    assert {lower(r.headers)["messagebird-request-id"] for r in (first, second)} == ids
    stamps = [int(lower(r.headers)["webhook-timestamp"]) for r in (first, second)]
    assert stamps[1] > stamps[0]  # each attempt is stamped (and signed) when it is sent
    assert first.body == second.body
    for request in (first, second):
        Webhook(SIGNING_KEY.encode()).verify(request.body, request.headers)
        headers = lower(request.headers)
        assert headers["messagebird-signature"] == bird_signature(
            SIGNING_KEY, headers["messagebird-request-timestamp"], url, request.body
        )

    entries = await logs(client, tenant, sub["id"])
    assert [(e["attempt"], e["executionStatus"], e["responseStatusCode"]) for e in entries] == [
        (2, "succeeded", 200),
        (1, "failed", 500),
    ]
    assert [e["responseBody"] for e in entries] == ["thanks", "try again"]
    assert {e["deliveryId"] for e in entries} == {delivery["id"]}
    assert all(e["event"] == "voice.inbound" and e["error"] is None for e in entries)


async def test_final_failure_after_the_last_attempt(client, tenant, receiver, dispatcher):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    receiver.reply(Reply(500))
    await ingest(client, call_event(tenant.workspace_id))

    delivery = await final_delivery(client, tenant, sub["id"])
    retry_delays = [0.2, 0.2, 0.2]  # the test settings
    assert delivery["state"] == "failed"
    assert delivery["nextAttemptAt"] is None
    assert delivery["attempts"] == len(retry_delays) + 1
    requests = receiver.to("/hook")
    assert len(requests) == len(retry_delays) + 1
    gaps = [b.at - a.at for a, b in itertools.pairwise(requests)]
    assert all(gap >= 0.2 * 0.8 - 0.02 for gap in gaps), gaps  # the schedule, minus jitter
    entries = await logs(client, tenant, sub["id"])
    assert [e["attempt"] for e in entries] == [4, 3, 2, 1]
    assert {e["executionStatus"] for e in entries} == {"failed"}
    failed = await get_page(client, tenant, sub["id"], "deliveries", state="failed")
    assert [d["id"] for d in failed["results"]] == [delivery["id"]]


async def test_410_fails_at_once_and_deactivates_the_subscription(
    client, tenant, receiver, dispatcher
):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    receiver.reply(Reply(410, body="gone"))
    # Two statuses of one call: the second waits for the first, then must not be sent at all.
    ringing, ongoing = await ingest_batch(
        client,
        [
            call_event(tenant.workspace_id, status="ringing"),
            call_event(tenant.workspace_id, status="ongoing"),
        ],
    )

    async def both_final():
        found = await deliveries(client, tenant, sub["id"])
        return all(d["state"] != "pending" for d in found) and found

    by_event = {d["eventId"]: d for d in await wait_until(both_final)}
    first, later = by_event[ringing["id"]], by_event[ongoing["id"]]
    assert first["state"] == "failed" and first["attempts"] == 1
    assert later["state"] == "failed" and later["attempts"] == 0
    assert later["error"] == "subscription inactive"
    assert len(receiver.to("/hook")) == 1

    response = await client.get(tenant.subscription(sub["id"]), headers=tenant.headers)
    body = response.json()
    assert body["status"] == "inactive"
    assert "410" in body["statusReason"]
    (entry,) = await logs(client, tenant, sub["id"])
    assert entry["responseStatusCode"] == 410 and entry["executionStatus"] == "failed"
    assert (await ingest(client, call_event(tenant.workspace_id, call_id="next")))[
        "deliveries"
    ] == 0


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_redirect_is_not_followed_and_is_a_failed_attempt(
    client, tenant, receiver, dispatcher, status
):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    receiver.reply(Reply(status, headers={"Location": f"{receiver.url}/elsewhere"}))
    await ingest(client, call_event(tenant.workspace_id))
    first = (await attempts_logged(client, tenant, sub["id"], 1))[-1]
    assert first["executionStatus"] == "failed"
    assert first["responseStatusCode"] == status
    assert "redirect" in first["error"]
    # The attempt is recorded only after the client is done with it, so a followed redirect
    # would have reached the receiver by now.
    assert receiver.to("/elsewhere") == []


@pytest.mark.parametrize("settings_overrides", [{"delivery_timeout": 0.5}])
async def test_slow_receiver_is_a_timed_out_attempt(client, tenant, receiver, dispatcher):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    receiver.reply(Reply(200, delay=1.5))
    await ingest(client, call_event(tenant.workspace_id))
    first = (await attempts_logged(client, tenant, sub["id"], 1))[-1]
    assert first["executionStatus"] == "failed"
    assert first["responseStatusCode"] is None
    assert "timeout" in first["error"]
    assert 400 <= first["durationMs"] < 1500


@pytest.mark.parametrize("settings_overrides", [{"retry_delays": "0.1,0.1"}])
@pytest.mark.parametrize(
    ("status", "retry_after", "at_least"),
    [
        (429, lambda: "2", 1.9),
        (503, lambda: formatdate(time.time() + 3, usegmt=True), 1.5),
    ],
    ids=["429-seconds", "503-http-date"],
)
async def test_retry_after_delays_the_next_attempt(
    client, tenant, receiver, dispatcher, status, retry_after, at_least
):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    receiver.reply(Reply(status, headers={"Retry-After": retry_after()}), Reply(200))
    await ingest(client, call_event(tenant.workspace_id))
    delivery = await final_delivery(client, tenant, sub["id"])
    assert delivery["state"] == "succeeded"
    first, second = receiver.to("/hook")
    assert second.at - first.at >= at_least  # not the scheduled 0.1 s


async def test_retry_after_is_capped_at_an_hour(client, tenant, receiver, dispatcher):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    receiver.reply(Reply(503, headers={"Retry-After": "86400"}))
    await ingest(client, call_event(tenant.workspace_id))
    (entry,) = await attempts_logged(client, tenant, sub["id"], 1)

    async def rescheduled():
        (found,) = await deliveries(client, tenant, sub["id"])
        return found["attempts"] == 1 and found

    delivery = await wait_until(rescheduled)
    wait = datetime.fromisoformat(delivery["nextAttemptAt"]) - datetime.fromisoformat(
        entry["createdAt"]
    )
    assert 3590 <= wait.total_seconds() <= 3610


@pytest.mark.parametrize("settings_overrides", [{"allowed_target_networks": "127.0.0.0/8,::1/128"}])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_blocked_address_at_delivery_time(client, tenant, receiver, database_url, host):
    # The API admitted the URL (loopback was allowed then); the dispatcher allows nothing.
    sub = await create_subscription(client, tenant, url=f"http://{host}:{receiver.port}/hook")
    async with running_dispatcher(database_url, allowed_target_networks=""):
        await ingest(client, call_event(tenant.workspace_id))
        first = (await attempts_logged(client, tenant, sub["id"], 1))[-1]
    assert first["executionStatus"] == "failed"
    assert first["responseStatusCode"] is None
    assert "blocked address" in first["error"]
    # Recorded attempts are finished attempts: nothing reached the receiver.
    assert receiver.requests == []


# -- stopping a subscription stops its deliveries -------------------------------------------

MANY_RETRIES = {"retry_delays": ",".join(["0.3"] * 20)}


async def _failing_subscription_with_pending_deliveries(client, tenant, receiver):
    """`/a` fails every time, so its three deliveries retry every ~0.3 s."""
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/a")
    receiver.reply(Reply(500), path="/a")
    await ingest_batch(
        client, [call_event(tenant.workspace_id, call_id=f"call-{n}") for n in range(3)]
    )
    await wait_until(lambda: len(receiver.to("/a")) >= 4)  # retries are under way
    return sub


async def _prove_time_passed(client, tenant, receiver):
    """Another subscription's delivery failing twice then succeeding proves that at least
    two retry intervals went by with the dispatcher working."""
    await create_subscription(client, tenant, url=f"{receiver.url}/b", event="voice.outbound")
    receiver.reply(Reply(500), Reply(500), Reply(200), path="/b")
    await ingest(client, call_event(tenant.workspace_id, event="voice.outbound"))
    await wait_until(lambda: len(receiver.to("/b")) == 3)


@pytest.mark.parametrize("settings_overrides", [MANY_RETRIES])
async def test_deactivating_fails_pending_deliveries_and_stops_sending(
    client, tenant, receiver, dispatcher
):
    sub = await _failing_subscription_with_pending_deliveries(client, tenant, receiver)
    response = await client.patch(
        tenant.subscription(sub["id"]), json={"status": "inactive"}, headers=tenant.headers
    )
    assert response.status_code == 200
    assert response.json()["statusReason"] is None  # the user did it
    stopped_at = time.monotonic()

    found = await deliveries(client, tenant, sub["id"])
    assert len(found) == 3
    for delivery in found:
        assert delivery["state"] == "failed"
        assert delivery["nextAttemptAt"] is None
        assert delivery["error"] == "subscription inactive"

    await _prove_time_passed(client, tenant, receiver)
    # Only a request already in flight when the PATCH committed may still arrive (within
    # moments); retries every ~0.3 s would have arrived long after.
    assert [r for r in receiver.to("/a") if r.at > stopped_at + 0.25] == []
    assert all(d["state"] == "failed" for d in await deliveries(client, tenant, sub["id"]))


@pytest.mark.parametrize("settings_overrides", [MANY_RETRIES])
async def test_deleting_removes_deliveries_and_stops_sending(
    client, tenant, receiver, dispatcher, db
):
    sub = await _failing_subscription_with_pending_deliveries(client, tenant, receiver)
    response = await client.delete(tenant.subscription(sub["id"]), headers=tenant.headers)
    assert response.status_code == 204
    stopped_at = time.monotonic()

    await _prove_time_passed(client, tenant, receiver)
    assert [r for r in receiver.to("/a") if r.at > stopped_at + 0.25] == []
    rows = await db.fetchval(
        "SELECT count(*) FROM deliveries WHERE subscription_id = $1::uuid", sub["id"]
    )
    assert rows == 0
    # Its attempts are unreachable (the subscription is checked first) and expire with their
    # day of history.
    response = await client.get(f"{tenant.subscription(sub['id'])}/logs", headers=tenant.headers)
    assert response.status_code == 404


# -- the logs endpoint -----------------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [{"retry_delays": "0.05,0.05,0.05,0.05"}])
async def test_logs_pages_newest_first_and_filter(client, tenant, receiver, dispatcher):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    receiver.reply(*[Reply(500, body=f"no {n}") for n in range(1, 5)], Reply(200, body="yes"))
    result = await ingest(client, call_event(tenant.workspace_id))
    delivery = await final_delivery(client, tenant, sub["id"])
    assert delivery["state"] == "succeeded" and delivery["attempts"] == 5

    pages, token = [], None
    while True:
        params = {"limit": 2, **({"pageToken": token} if token else {})}
        page = await get_page(client, tenant, sub["id"], "logs", **params)
        pages.append(page["results"])
        token = page.get("nextPageToken")
        if token is None:
            assert "nextPageToken" not in page or page["nextPageToken"] is None
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    entries = [e for p in pages for e in p]
    assert [e["attempt"] for e in entries] == [5, 4, 3, 2, 1]
    stamps = [datetime.fromisoformat(e["createdAt"]) for e in entries]
    assert stamps == sorted(stamps, reverse=True)
    assert len({e["id"] for e in entries}) == 5
    assert {e["eventId"] for e in entries} == {result["id"]}
    assert {e["deliveryId"] for e in entries} == {delivery["id"]}
    assert [e["responseBody"] for e in entries] == ["yes", "no 4", "no 3", "no 2", "no 1"]
    assert all(e["durationMs"] >= 0 for e in entries)

    failed = await logs(client, tenant, sub["id"], executionStatus="failed")
    assert [e["attempt"] for e in failed] == [4, 3, 2, 1]
    succeeded = await logs(client, tenant, sub["id"], executionStatus="succeeded")
    assert [(e["attempt"], e["responseStatusCode"]) for e in succeeded] == [(5, 200)]
    for params in ({"executionStatus": "pending"}, {"limit": 0}, {"limit": 101}):
        response = await client.get(
            f"{tenant.subscription(sub['id'])}/logs", params=params, headers=tenant.headers
        )
        assert response.status_code == 422, params


@pytest.mark.parametrize(
    "answer",
    ["x" * 5000, "€" * 1000, "short"],
    ids=["ascii", "multibyte-cut", "short"],
)
async def test_logs_keep_the_first_2048_bytes_of_the_answer(
    client, tenant, receiver, dispatcher, answer
):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    receiver.reply(Reply(200, body=answer))
    await ingest(client, call_event(tenant.workspace_id))
    (entry,) = await attempts_logged(client, tenant, sub["id"], 1)
    expected = answer.encode()[:2048].decode("utf-8", errors="replace")
    assert entry["responseBody"] == expected
    assert entry["executionStatus"] == "succeeded"


async def test_connection_refused_has_no_status_code_and_an_error(client, tenant, dispatcher):
    sub = await create_subscription(client, tenant, url=f"http://127.0.0.1:{closed_port()}/hook")
    await ingest(client, call_event(tenant.workspace_id))
    first = (await attempts_logged(client, tenant, sub["id"], 1))[-1]
    assert first["executionStatus"] == "failed"
    assert first["responseStatusCode"] is None
    assert "refused" in first["error"]
    assert first["responseBody"] is None


# -- numeric hosts (SPEC §2: delivered to, or refused with 422; never accepted and undeliverable)


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0177.0.0.1", "127.0.0.1."])
async def test_a_numeric_host_the_sender_cannot_connect_to_is_refused(client, tenant, db, host):
    body = {"service": "channels", "event": "voice.inbound", "url": f"http://{host}:9/hook"}
    response = await client.post(tenant.subscriptions, json=body, headers=tenant.headers)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "url"
    assert "127.0.0.1" in response.json()["errors"][0]["message"]
    assert await db.fetchval("SELECT count(*) FROM subscriptions") == 0


async def test_a_hex_spelled_host_is_accepted_and_delivered_to(
    client, tenant, receiver, dispatcher
):
    port = receiver.url.rsplit(":", 1)[1]
    await create_subscription(client, tenant, url=f"http://0x7f.0.0.1:{port}/hook")
    await ingest(client, call_event(tenant.workspace_id))
    await wait_until(lambda: receiver.requests, timeout=10)


# -- waking an idle dispatcher ---------------------------------------------------------------


@pytest.mark.parametrize("writer", ["ingestion", "test event"])
async def test_a_new_delivery_wakes_an_idle_dispatcher_long_before_its_next_poll(
    client, tenant, receiver, database_url, writer
):
    # Polling once a minute: only the wake-up that the writer's statement sends on commit can
    # bring the second delivery within the bound.
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/woken")
    async with running_dispatcher(database_url, poll_interval=60.0):
        await ingest(client, call_event(tenant.workspace_id, call_id="before"))
        await wait_until(lambda: len(receiver.to("/woken")) == 1, timeout=10)
        # Idle now: its last claim found nothing more, and the next poll is a minute away.
        if writer == "ingestion":
            await ingest(client, call_event(tenant.workspace_id, call_id="after"))
        else:
            response = await client.post(
                f"{tenant.subscription(sub['id'])}/test", headers=tenant.headers
            )
            assert response.status_code == 202, response.text
        await wait_until(lambda: len(receiver.to("/woken")) == 2, timeout=5)
