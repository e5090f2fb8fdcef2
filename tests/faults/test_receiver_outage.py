"""A receiver outage, then `recover` (SPEC §2, §4): the receiver answers 503, or is down
(connections refused), until every delivery has used up its short retry schedule and is
`failed`; once it is healthy again, `POST …/recover {"since": …}` sends every one of them."""

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import pytest

from tests.faults.harness import (
    DownableReceiver,
    Findings,
    Ingestor,
    Service,
    bounded,
    create_subscriptions,
    deliveries_received,
    inbound_event,
)
from tests.support import Reply, Tenant, wait_until

EVENTS = 40


async def _deliveries(
    http: aiohttp.ClientSession, service: Service, tenant: Tenant, subscription_id: str, state: str
) -> list[str]:
    """Ids of the subscription's deliveries in `state`, through the public API (every page)."""
    ids: list[str] = []
    params = {"state": state, "limit": "100"}
    while True:
        async with http.get(
            f"{service.base_url}{tenant.subscription(subscription_id)}/deliveries",
            params=params,
            headers=tenant.headers,
        ) as response:
            assert response.status == 200, await response.text()
            page = await response.json()
        ids += [item["id"] for item in page["results"]]
        if not page.get("nextPageToken"):
            return ids
        params["pageToken"] = page["nextPageToken"]


@pytest.mark.parametrize("outage", ["503", "down"])
@bounded(90)
async def test_receiver_outage_then_recover(
    database_url: str,
    db: asyncpg.Connection,
    tenant: Tenant,
    services: Callable[..., Awaitable[Service]],
    downable_receiver: DownableReceiver,
    outage: str,
) -> None:
    findings = Findings()
    receiver = downable_receiver
    serve = await services("serve", database_url, retry_delays="0.2,0.2", delivery_timeout="1")
    (subscription_id,) = await create_subscriptions(serve.base_url, tenant, [f"{receiver.url}/h"])
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()

    if outage == "503":
        receiver.reply(Reply(503, body="maintenance"))
    else:
        await receiver.stop()
    async with Ingestor(serve.base_url) as ingestor:
        events = [inbound_event(tenant.workspace_id, f"r-{n}") for n in range(EVENTS)]
        answer = await ingestor.send(events, batch=True)
    assert answer.accepted, answer

    async with aiohttp.ClientSession() as http:

        async def all_failed() -> bool:
            failed = await _deliveries(http, serve, tenant, subscription_id, "failed")
            return len(failed) == EVENTS

        await wait_until(all_failed, timeout=30, interval=0.2)
        if outage == "503":
            findings.check(
                len(receiver.requests) == 3 * EVENTS,
                f"{len(receiver.requests)} requests during the outage, expected 3 per delivery",
            )
        tried = await db.fetchval(
            "SELECT count(*) FROM attempts WHERE response_status_code IS NULL"
        )
        findings.record("attempts_without_answer", int(tried))

        # Healthy again; the operator recovers what failed.
        receiver.requests.clear()
        receiver.reply(Reply(200))
        if outage == "down":
            await receiver.start()
        async with http.post(
            f"{serve.base_url}{tenant.subscription(subscription_id)}/recover",
            json={"since": since},
            headers=tenant.headers,
        ) as response:
            status, body = response.status, await response.json()
        findings.check(
            (status, body) == (202, {"requeued": EVENTS}),
            f"recover answered {status} {body}, expected 202 requeued {EVENTS}",
        )

        async def all_succeeded() -> bool:
            done = await _deliveries(http, serve, tenant, subscription_id, "succeeded")
            return len(done) == EVENTS

        try:
            await wait_until(all_succeeded, timeout=30, interval=0.2)
        except AssertionError:
            findings.check(False, "not every recovered delivery succeeded")
        delivered = await _deliveries(http, serve, tenant, subscription_id, "succeeded")

    received = deliveries_received(receiver.requests)
    findings.record("delivered_after_recover", len(received))
    findings.check(
        set(delivered) == set(received) and len(received) == EVENTS,
        f"{len(received)} of {EVENTS} deliveries reached the receiver after recover",
    )
    findings.check(
        set(received.values()) == {1}, f"recovered deliveries sent more than once: {received}"
    )
    findings.assert_all()
