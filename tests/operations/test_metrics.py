"""GET /metrics (SPEC §5): Prometheus text, right even when API and worker are separate."""

import asyncio
import math

from prometheus_client.parser import text_string_to_metric_families

from tests.operations_helpers import (
    INGEST_HEADERS,
    ingest,
    running,
    running_api,
    sample,
    scrape,
    service_environment,
    wait_for_delivery,
    wait_for_readyz,
)
from tests.support import INGEST_TOKEN, Reply, call_event, create_subscription, wait_until
from voicehooks.dispatch.worker import Dispatcher

INGESTED = "voicehooks_events_ingested_total"
ATTEMPTS = "voicehooks_delivery_attempts_total"
DURATION = "voicehooks_attempt_duration_seconds"
DUE = "voicehooks_backlog_due"
OLDEST = "voicehooks_backlog_oldest_due_age_seconds"
IN_FLIGHT = "voicehooks_deliveries_in_flight"
DISABLED = "voicehooks_subscriptions_auto_disabled_total"


async def _metrics_reach(client, expected: dict[tuple[str, tuple], float], timeout: float = 10):
    """Scrape until every expected sample has its value (counters may be flushed a bit later)."""

    async def reached():
        samples = await scrape(client)
        if all(
            sample(samples, name, **dict(labels)) == v for (name, labels), v in expected.items()
        ):
            return samples
        return None

    return await wait_until(reached, timeout=timeout, interval=0.1)


def _key(name: str, **labels: str) -> tuple[str, tuple]:
    return name, tuple(sorted(labels.items()))


async def test_counters_and_the_duration_histogram(client, db, tenant, receiver, dispatcher):
    ok = await create_subscription(client, tenant, url=f"{receiver.url}/ok")
    down = await create_subscription(
        client, tenant, url=f"{receiver.url}/down", event="voice.outbound"
    )
    # Answers that take a few milliseconds: durations are recorded in whole milliseconds.
    receiver.reply(Reply(200, delay=0.005), path="/ok")
    receiver.reply(Reply(500, delay=0.005), path="/down")
    first = await ingest(client, call_event(tenant.workspace_id, call_id="a"))
    second = await ingest(client, call_event(tenant.workspace_id, call_id="b"))
    third = await ingest(
        client, call_event(tenant.workspace_id, call_id="c", event="voice.outbound")
    )
    for result in (first, second):
        await wait_for_delivery(db, result["id"], ok["id"], state="succeeded")
    await wait_for_delivery(db, third["id"], down["id"], state="failed", attempts=4)

    samples = await _metrics_reach(
        client,
        {
            _key(INGESTED, event="voice.inbound"): 2,
            _key(INGESTED, event="voice.outbound"): 1,
            _key(ATTEMPTS, outcome="succeeded"): 2,
            _key(ATTEMPTS, outcome="failed"): 4,
            _key(f"{DURATION}_count"): 6,
            _key("voicehooks_deliveries_finished_total", state="succeeded"): 2,
            _key("voicehooks_deliveries_finished_total", state="failed"): 1,
        },
    )
    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for (name, labels), value in samples.items()
        if name == f"{DURATION}_bucket"
    )
    assert buckets[-1] == (math.inf, 6)
    assert [value for _, value in buckets] == sorted(value for _, value in buckets)
    assert 0 < sample(samples, f"{DURATION}_sum") < 6 * 2.0
    assert sample(samples, DUE) == 0
    assert sample(samples, IN_FLIGHT) == 0


async def test_response_is_prometheus_text(client, db):
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    kinds = {family.name: family.type for family in text_string_to_metric_families(response.text)}
    assert kinds == {
        "voicehooks_events_ingested": "counter",
        "voicehooks_delivery_attempts": "counter",
        "voicehooks_deliveries_finished": "counter",
        "voicehooks_subscriptions_auto_disabled": "counter",
        DURATION: "histogram",
        DUE: "gauge",
        OLDEST: "gauge",
        IN_FLIGHT: "gauge",
    }


async def test_backlog_gauges_show_what_is_due_and_not_sent(
    client, db, tenant, receiver, settings, database_url
):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    # No dispatcher runs: ingested deliveries are due and wait.
    due = await ingest(client, call_event(tenant.workspace_id, call_id="one", status="ringing"))
    await ingest(client, call_event(tenant.workspace_id, call_id="one", status="ongoing"))
    scheduled = await ingest(client, call_event(tenant.workspace_id, call_id="two"))
    await db.execute(
        "UPDATE delivery_queue SET due_at = now() - interval '42 seconds' "
        "WHERE delivery_id IN (SELECT id FROM deliveries WHERE event_id = $1::uuid)",
        due["id"],
    )
    await db.execute(
        "UPDATE delivery_queue SET due_at = now() + interval '1 hour' "
        "WHERE delivery_id IN (SELECT id FROM deliveries WHERE event_id = $1::uuid)",
        scheduled["id"],
    )

    samples = await scrape(client)
    # The second status of call "one" waits for the first; call "two" is not due yet.
    assert sample(samples, DUE) == 1
    assert 42 <= sample(samples, OLDEST) < 100
    assert sample(samples, IN_FLIGHT) == 0

    dispatcher = Dispatcher(settings, database_url)
    task = asyncio.create_task(dispatcher.run())
    try:
        await wait_for_delivery(db, due["id"], sub["id"], state="succeeded")
        samples = await _metrics_reach(client, {_key(DUE): 0}, timeout=10)
        assert sample(samples, OLDEST) == 0
        # Both deliveries of call "one" arrive (the second may still be on its way when the
        # gauge reads 0: claimed, not yet answered), and nothing of call "two".
        await wait_until(lambda: len(receiver.requests) >= 2)
        assert [r.json()["payload"]["id"] for r in receiver.requests] == ["one", "one"]
    finally:
        dispatcher.stop()
        await asyncio.wait_for(task, 30)


async def test_in_flight_gauge_counts_deliveries_being_sent(
    client, db, tenant, receiver, dispatcher
):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/slow")
    receiver.reply(Reply(200, delay=1.0), path="/slow")
    result = await ingest(client, call_event(tenant.workspace_id))

    await wait_until(lambda: receiver.to("/slow"))
    samples = await scrape(client)
    assert sample(samples, IN_FLIGHT) == 1
    assert sample(samples, DUE) == 0
    await wait_for_delivery(db, result["id"], sub["id"], state="succeeded")
    assert sample(await scrape(client), IN_FLIGHT) == 0


async def test_auto_disabled_counter_by_reason(client, db, tenant, receiver, dispatcher):
    gone = await create_subscription(client, tenant, url=f"{receiver.url}/gone")
    failing = await create_subscription(
        client, tenant, url=f"{receiver.url}/failing", event="voice.outbound"
    )
    receiver.reply(Reply(410), path="/gone")
    receiver.reply(Reply(500), path="/failing")
    await db.execute(
        "UPDATE subscriptions SET failing_since = now() - interval '6 days' WHERE id = $1::uuid",
        failing["id"],
    )
    first = await ingest(client, call_event(tenant.workspace_id))
    second = await ingest(client, call_event(tenant.workspace_id, event="voice.outbound"))
    await wait_for_delivery(db, first["id"], gone["id"], state="failed")
    await wait_for_delivery(db, second["id"], failing["id"], state="failed")

    await _metrics_reach(
        client,
        {
            _key(DISABLED, reason="gone"): 1,
            _key(DISABLED, reason="failing"): 1,
        },
    )


async def test_attempts_of_a_separate_worker_process_show_in_the_api(
    client, db, tenant, receiver, database_url, tmp_path
):
    ok = await create_subscription(client, tenant, url=f"{receiver.url}/ok")
    down = await create_subscription(
        client, tenant, url=f"{receiver.url}/down", event="voice.outbound"
    )
    receiver.reply(Reply(200), path="/ok")
    receiver.reply(Reply(500), path="/down")
    stderr = tmp_path / "worker.log"
    async with running(service_environment(database_url), stderr, "worker"):
        results = [
            await ingest(client, call_event(tenant.workspace_id, call_id=f"call-{n}"))
            for n in range(3)
        ]
        down_result = await ingest(
            client, call_event(tenant.workspace_id, event="voice.outbound", call_id="down")
        )
        for result in results:
            await wait_for_delivery(db, result["id"], ok["id"], state="succeeded", timeout=20)
        await wait_for_delivery(
            db, down_result["id"], down["id"], state="failed", attempts=4, timeout=20
        )
        assert len(receiver.requests) == 7
        # This process made no attempt: the worker's counters reach the API through Postgres.
        samples = await _metrics_reach(
            client,
            {
                _key(ATTEMPTS, outcome="succeeded"): 3,
                _key(ATTEMPTS, outcome="failed"): 4,
                _key(f"{DURATION}_count"): 7,
                _key(INGESTED, event="voice.inbound"): 3,
                _key(INGESTED, event="voice.outbound"): 1,
            },
            timeout=10,
        )
        assert sample(samples, f"{DURATION}_bucket", le="+Inf") == 7
    assert "Traceback" not in stderr.read_text()


async def test_every_api_replica_sees_the_counters_of_the_others(
    client, db, tenant, receiver, database_url, tmp_path
):
    """Ingestion through one API process, delivery by a worker, scrape of yet another API."""
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    env = service_environment(database_url, VOICEHOOKS_INGEST_TOKEN=INGEST_TOKEN)
    async with (
        running_api(env, tmp_path / "api.log") as other_api,
        running(env, tmp_path / "worker.log", "worker"),
    ):
        await wait_for_readyz(other_api)
        for n in range(2):
            response = await other_api.post(
                "/internal/v1/events",
                json=call_event(tenant.workspace_id, call_id=f"call-{n}"),
                headers=INGEST_HEADERS,
            )
            assert response.status_code == 202, response.text
            await wait_for_delivery(db, response.json()["id"], sub["id"], state="succeeded")

        await _metrics_reach(
            client,
            {
                _key(INGESTED, event="voice.inbound"): 2,
                _key(ATTEMPTS, outcome="succeeded"): 2,
            },
        )
        # The API that ingested sees the same totals.
        assert sample(await scrape(other_api), INGESTED, event="voice.inbound") == 2
