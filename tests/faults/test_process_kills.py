"""`kill -9` of voicehooks processes at work (SPEC §3, §4: atomic ingestion, at least once).

- `serve` killed during single and during batch ingestion (8 clients, 6 matching
  subscriptions), three times, restarted each time;
- an `api` process killed during ingestion while a separate `worker` delivers;
- a `worker` killed while deliveries are in flight to a slow receiver, a new one started.

After the kills, every request that got no 202 is sent again with the same ids, plus a sample
of those that did. What must hold: every accepted event reaches all of its subscriptions; no
event exists without its deliveries; a re-sent id answers a new acceptance or the original
one, never `deliveries: 6` with nothing delivered; duplicates only of deliveries that were in
flight at a kill.
"""

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from tests.faults.harness import (
    SIX_MATCHING_FILTERS,
    Answer,
    Arrivals,
    Findings,
    Ingestor,
    Service,
    bounded,
    create_subscriptions,
    deliveries_received,
    events_short_of_deliveries,
    events_without_all,
    holds_within,
    inbound_event,
)
from tests.support import Receiver, Reply, Tenant, wait_until

CLIENTS = 8
BATCH = 50
SUBSCRIPTIONS = 6
SAMPLE = 10  # accepted requests sent again after the kills
# Fast leases: a killed dispatcher's claims come back after 4 x timeout + margin = 5 s.
FAST_LEASE = {"delivery_timeout": "1", "lease_margin": "1"}


def _requests(
    tenant: Tenant, round_: int, group: int, size: int
) -> Callable[[int, int], list[dict[str, Any]]]:
    """The events of each request of a client: ids that say which round, group, client and
    request they belong to."""

    def make(client: int, sequence: int) -> list[dict[str, Any]]:
        prefix = f"k{round_}-g{group}-c{client}-r{sequence}"
        return [inbound_event(tenant.workspace_id, f"{prefix}-{i}") for i in range(size)]

    return make


async def ingest_through_kills(
    victim: Service,
    base_url: str,
    tenant: Tenant,
    *,
    kills: int,
    loads: list[tuple[int, int]],
    kill_after: int,
) -> list[Answer]:
    """Rounds of load, each ended by `kill -9` of `victim` once `kill_after` requests of the
    round were accepted; the victim is restarted after each kill. `loads`: (clients, events
    per request) groups, 1 meaning the single-event endpoint. Every answer, in order."""
    answers: list[Answer] = []
    for round_ in range(kills):
        stop = asyncio.Event()
        async with Ingestor(base_url, connections=sum(n for n, _ in loads)) as ingestor:
            load = asyncio.gather(
                *(
                    ingestor.clients(
                        count, _requests(tenant, round_, group, size), batch=size > 1, stop=stop
                    )
                    for group, (count, size) in enumerate(loads)
                )
            )
            await wait_until(
                lambda: sum(a.accepted for a in ingestor.answers) >= kill_after,
                timeout=60,
                interval=0.005,
            )
            await victim.kill9()
            stop.set()
            await asyncio.wait_for(load, 60)
            answers += ingestor.answers
        await victim.start()
    return answers


async def resend_and_check(
    findings: Findings,
    answers: list[Answer],
    base_url: str,
    db: asyncpg.Connection,
    receiver: Receiver,
    *,
    matching: int,
) -> None:
    """Send again what got no 202 (same ids) and a sample of what did; then check the database
    and the receiver."""
    unanswered = [a for a in answers if not a.accepted]
    accepted = [a for a in answers if a.accepted]
    sample = random.Random(len(answers)).sample(accepted, min(SAMPLE, len(accepted)))
    findings.record("requests", len(answers))
    findings.record("without_202", len(unanswered))
    findings.record(
        "statuses_without_202", sorted({str(a.status or a.error)[:40] for a in unanswered})
    )
    findings.check(bool(unanswered), "no request was cut off by a kill: nothing was tested")

    async with Ingestor(base_url, connections=CLIENTS) as ingestor:
        again = await asyncio.gather(*(ingestor.send(a.items, batch=a.batch) for a in unanswered))
        again_sample = await asyncio.gather(
            *(ingestor.send(a.items, batch=a.batch) for a in sample)
        )

    refused = [a for a in again + again_sample if not a.accepted]
    findings.check(not refused, f"{len(refused)} re-sent requests not accepted: {refused[:2]}")
    duplicates_seen = 0
    for before, after in zip(sample, again_sample, strict=True):
        if not after.accepted:
            continue
        for old, new in zip(before.results, after.results, strict=True):
            findings.check(
                new == {**old, "duplicate": True},
                f"an accepted id sent again answered {new}, not the original {old}",
            )
    for after in again:
        if after.accepted:
            for result in after.results:
                duplicates_seen += bool(result["duplicate"])
                findings.check(
                    result["deliveries"] == matching,
                    f"a re-sent event answered {result} (expected deliveries: {matching})",
                )
    findings.record("resent_answered_duplicate", duplicates_seen)

    # The database: no event without its deliveries.
    short = await events_short_of_deliveries(db)
    findings.check(short == 0, f"{short} events have fewer deliveries than they were matched to")
    incomplete = await events_without_all(db, matching)
    findings.check(
        not incomplete,
        f"{len(incomplete)} events with fewer than {matching} deliveries: {incomplete[:5]}",
    )

    # The receiver: every accepted event at every subscription.
    wanted = {
        client_id
        for answer in [*accepted, *again, *again_sample]
        if answer.accepted
        for client_id in answer.client_ids
    }
    findings.record("events_accepted", len(wanted))

    arrivals = Arrivals(receiver)
    paths = {f"/s{n}" for n in range(matching)}
    try:
        await wait_until(
            lambda: not arrivals.calls_missing(wanted, paths), timeout=60, interval=0.25
        )
    except AssertionError:
        lost = arrivals.calls_missing(wanted, paths)
        findings.check(
            False,
            f"{len(lost)} accepted events never reached all subscriptions: {sorted(lost)[:5]}",
        )
    findings.record("deliveries_received", len(arrivals.times_by_delivery))
    findings.record("duplicate_requests", arrivals.duplicates)


async def six_subscriptions(service: Service, tenant: Tenant, receiver: Receiver) -> None:
    await create_subscriptions(
        service.base_url,
        tenant,
        [f"{receiver.url}/s{n}" for n in range(SUBSCRIPTIONS)],
        SIX_MATCHING_FILTERS,
    )


@pytest.mark.parametrize("size", [1, BATCH], ids=["single", "batch"])
@bounded(240)
async def test_kill_serve_during_ingestion(
    database_url: str,
    db: asyncpg.Connection,
    tenant: Tenant,
    services: Callable[..., Awaitable[Service]],
    receiver: Receiver,
    size: int,
) -> None:
    findings = Findings()
    serve = await services("serve", database_url, **FAST_LEASE)
    await six_subscriptions(serve, tenant, receiver)
    answers = await ingest_through_kills(
        serve,
        serve.base_url,
        tenant,
        kills=3,
        loads=[(CLIENTS, size)],
        kill_after=4 if size > 1 else 60,
    )
    await resend_and_check(findings, answers, serve.base_url, db, receiver, matching=SUBSCRIPTIONS)
    findings.assert_all()


@bounded(240)
async def test_kill_api_during_ingestion_with_a_separate_worker(
    database_url: str,
    db: asyncpg.Connection,
    tenant: Tenant,
    services: Callable[..., Awaitable[Service]],
    receiver: Receiver,
) -> None:
    findings = Findings()
    api = await services("api", database_url, **FAST_LEASE)
    worker = await services("worker", database_url, **FAST_LEASE)
    await six_subscriptions(api, tenant, receiver)
    answers = await ingest_through_kills(
        api,
        api.base_url,
        tenant,
        kills=2,
        loads=[(CLIENTS // 2, 1), (CLIENTS // 2, BATCH)],
        kill_after=12,
    )
    await resend_and_check(findings, answers, api.base_url, db, receiver, matching=SUBSCRIPTIONS)
    assert worker.process is not None and worker.process.returncode is None  # it went on
    findings.assert_all()


@bounded(120)
async def test_kill_worker_during_delivery(
    database_url: str,
    db: asyncpg.Connection,
    tenant: Tenant,
    services: Callable[..., Awaitable[Service]],
    receiver: Receiver,
) -> None:
    findings = Findings()
    # Lease: 4 x 1.5 s + 1 s = 7 s. At most 8 requests in flight, 32 deliveries held.
    settings = {"delivery_timeout": "1.5", "lease_margin": "1", "max_in_flight": "8"}
    api = await services("api", database_url, **settings)
    doomed = await services("worker", database_url, name="worker-killed", **settings)
    receiver.reply(Reply(200, delay=0.5))  # slow: deliveries are in flight at the kill
    await create_subscriptions(api.base_url, tenant, [f"{receiver.url}/hook"])
    async with Ingestor(api.base_url) as ingestor:
        events = [inbound_event(tenant.workspace_id, f"w-{n}") for n in range(80)]
        answer = await ingestor.send(events, batch=True)
    assert answer.accepted, answer
    event_ids = [result["id"] for result in answer.results]

    await wait_until(lambda: len(receiver.requests) >= 20, timeout=30)
    await doomed.kill9()
    recorded = {
        str(row["id"])
        for row in await db.fetch("SELECT id FROM deliveries WHERE state = 'succeeded'")
    }
    # Taken last, just before another worker exists: whatever reached the receiver so far
    # was sent by the killed one.
    sent_before = set(deliveries_received(receiver.requests))
    in_flight = sent_before - recorded  # sent, and no outcome recorded: the kill cut them off
    findings.record("sent_before_kill", len(sent_before))
    findings.record("in_flight_at_kill", len(in_flight))

    receiver.reply(Reply(200))
    await services("worker", database_url, name="worker-new", **settings)

    async def all_succeeded() -> bool:
        done = await db.fetchval(
            "SELECT count(*) FROM deliveries WHERE state = 'succeeded' AND event_id = ANY($1)",
            event_ids,
        )
        return int(done) == len(event_ids)

    delivered = await holds_within(all_succeeded, 40)
    findings.check(delivered, "not every accepted event was delivered after the kill")
    delivery_ids = {str(r["id"]) for r in await db.fetch("SELECT id FROM deliveries")}
    received = deliveries_received(receiver.requests)
    findings.check(
        delivery_ids <= set(received),
        f"{len(delivery_ids - set(received))} deliveries never reached the receiver",
    )
    duplicated = {delivery_id: n for delivery_id, n in received.items() if n > 1}
    findings.record("duplicates", sum(n - 1 for n in duplicated.values()))
    findings.check(
        set(duplicated) <= in_flight,
        f"{len(set(duplicated) - in_flight)} deliveries sent twice that were not in flight "
        "at the kill",
    )
    findings.check(
        all(n == 2 for n in duplicated.values()),
        f"deliveries sent more than twice: {[n for n in duplicated.values() if n > 2]}",
    )
    findings.assert_all()
