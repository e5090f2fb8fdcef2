"""The scenarios of the issue table, each a comparison inside one run: e2e after an idle
ANALYZE vs before it, with 100k subscriptions in other workspaces vs without, beside a dead
host vs alone, and voicehooks vs the plain pgqueuer peer."""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

import aiohttp

from deliverybench.common import log
from deliverybench.cpu import CpuMeter
from deliverybench.phases import e2e_phase, settle
from deliverybench.processes import PeerService, Service, wait_idle
from deliverybench.receiver import DeadHost, Receiver
from deliverybench.traffic import e2e_batches

WARM_UP_EVENTS = 2000
OTHER_WORKSPACES = 1000  # the 100k subscriptions' workspaces, 100 each by default

# One statement: the other workspaces, then copies of the bench subscription into each of
# them with their own id and host. Copied through jsonb so that it holds whatever columns
# the table has; the copies' signing keys (bound to the original's id) are never used, as
# no event of theirs is ever ingested. (`original`, not `template`: a column has that name.)
MANY_SUBSCRIPTIONS_SQL = """
WITH original AS (SELECT * FROM subscriptions WHERE id = $1),
other AS (
    INSERT INTO workspaces (id, organization_id, name)
    SELECT gen_random_uuid(), organization_id, 'bench-other-' || n
    FROM original, generate_series(1, $2) AS n
    RETURNING id, name
)
INSERT INTO subscriptions
SELECT (jsonb_populate_record(
    NULL::subscriptions,
    to_jsonb(original.*) || jsonb_build_object(
        'id', gen_random_uuid(),
        'workspace_id', other.id,
        'url', 'https://' || other.name || '-' || k || '.example.com/hook',
        'target_host', other.name || '-' || k || '.example.com'
    )
)).*
FROM original, other, generate_series(1, $3) AS k
"""


def _rate(figures: dict[str, Any]) -> float | None:
    return figures.get("deliveries_per_s") if figures.get("complete") else None


def _arrival_rate(figures: dict[str, Any]) -> float | None:
    """Deliveries/s at the receiver, also when not all arrived within the phase's bound."""
    return figures.get("deliveries_per_s")


def _ratio(value: float | None, baseline: float | None) -> float | None:
    return round(value / baseline, 3) if value and baseline else None


async def warm_up(
    args: argparse.Namespace, service: Any, receiver: Receiver, meter: CpuMeter
) -> None:
    """An unmeasured e2e, so that both sides of a comparison run warm (connections, caches,
    the first pages of the tables); analyze-idle's "before" is the one e2e that runs cold."""
    events = min(args.events, WARM_UP_EVENTS)
    await e2e_phase(args, service, receiver, meter, name="warm-up", events=events)
    await wait_idle(service)


async def _settle(
    args: argparse.Namespace, service: Any, before: str, *, analyze: bool
) -> dict[str, float]:
    """`settle` before the measurement `before` (unless `--no-settle`); what it took."""
    if not args.settle:
        return {}
    await wait_idle(service)
    settled = await settle(service.dsn, analyze=analyze)
    log(
        f"{before}: settled first (VACUUM {settled['vacuum_s']} s,"
        f" on disk after {settled['settle_s']} s)"
    )
    return settled


async def analyze_chain(
    args: argparse.Namespace,
    phases: set[str],
    receiver: Receiver,
    meter: CpuMeter,
    results: dict[str, Any],
) -> None:
    """One database: e2e on fresh tables, ANALYZE while nothing is pending, e2e again (the
    voicehooks figure the pgqueuer peer is compared with), then with `--many-subscriptions`
    subscriptions in other workspaces, ANALYZE, e2e."""
    service = Service(args)
    try:
        await service.start()
        meter.procs.update(service.pids())
        meter.database = service.database
        async with aiohttp.ClientSession() as session:
            subscription = await service.subscribe(session, f"{receiver.base}/hook")
        await asyncio.sleep(1)  # let the worker's first housekeeping pass go by
        if "analyze-idle" in phases:
            log("analyze-idle: e2e before any ANALYZE")
            await _settle(args, service, "e2e_before_analyze", analyze=False)
            results["e2e_before_analyze"] = await e2e_phase(
                args, service, receiver, meter, name="e2e_before_analyze"
            )
        else:
            await warm_up(args, service, receiver, meter)
        idle_after = await wait_idle(service)
        if idle_after is None:
            raise RuntimeError("the service still had deliveries pending after 60 s")
        # The previous e2e cleaned up (a VACUUM without ANALYZE: it leaves the statistics),
        # then the statistics of an idle service, then its writes put on disk.
        settled = await _settle(args, service, "e2e_after_analyze", analyze=False)
        analyze_s = await service.db.analyze()
        log(f"analyze-idle: ANALYZE with nothing pending took {analyze_s} s")
        await asyncio.sleep(1)
        results["e2e_after_analyze"] = await e2e_phase(
            args, service, receiver, meter, name="e2e_after_analyze"
        )
        results["e2e_after_analyze"].update(settled, analyze_s=analyze_s)
        if "analyze-idle" in phases:
            results["analyze_idle"] = {
                "before": _rate(results["e2e_before_analyze"]),
                "after": _rate(results["e2e_after_analyze"]),
                "ratio": _ratio(
                    _rate(results["e2e_after_analyze"]), _rate(results["e2e_before_analyze"])
                ),
            }
        if "many-subscriptions" in phases:
            await many_subscriptions(args, service, subscription, receiver, meter, results)
    finally:
        for name in service.pids():
            meter.procs.pop(name, None)
        await service.stop()


async def many_subscriptions(
    args: argparse.Namespace,
    service: Service,
    subscription: str,
    receiver: Receiver,
    meter: CpuMeter,
    results: dict[str, Any],
) -> None:
    await wait_idle(service)
    workspaces = min(OTHER_WORKSPACES, args.many_subscriptions)
    per_workspace = max(1, args.many_subscriptions // workspaces)
    started = time.monotonic()
    status = await service.db.execute(
        MANY_SUBSCRIPTIONS_SQL, uuid.UUID(subscription), workspaces, per_workspace
    )
    inserted = int(status.split()[-1])  # "INSERT 0 <rows>"
    inserted_s = round(time.monotonic() - started, 2)
    # Settled as the baseline was, and the statistics refreshed: vacuumed as autovacuum does
    # after a bulk insert (otherwise it does so during the measurement, seen in every run,
    # and the e2e competes with a vacuum of 100k fresh rows, not with 100k subscriptions),
    # the insert's writes on disk (one run without that had its processes waiting, 1,344.5
    # deliveries/s with the machine 47 % busy).
    settled = await _settle(args, service, "e2e_many_subscriptions", analyze=True)
    if not args.settle:
        await service.db.vacuum("subscriptions")
        await service.db.analyze()
    log(
        f"many-subscriptions: {inserted} subscriptions in {workspaces} other workspaces"
        f" ({inserted_s} s), vacuumed and analyzed"
    )
    await asyncio.sleep(1)
    figures = await e2e_phase(args, service, receiver, meter, name="e2e_many_subscriptions")
    figures.update(settled, other_subscriptions=inserted, insert_s=inserted_s)
    results["e2e_many_subscriptions"] = figures
    results["many_subscriptions"] = {
        "without": _rate(results["e2e_after_analyze"]),
        "with": _rate(figures),
        "ratio": _ratio(_rate(figures), _rate(results["e2e_after_analyze"])),
    }


async def dead_host(
    args: argparse.Namespace, receiver: Receiver, meter: CpuMeter, results: dict[str, Any]
) -> None:
    """One database: e2e to the receiver alone; then a dead host subscribed to half the events
    (a channel filter), e2e right away and again after it has been dead `--dead-for` s."""
    service = Service(args)
    dead = DeadHost()
    await dead.start()
    try:
        await service.start()
        meter.procs.update(service.pids())
        meter.database = service.database
        channels = [str(uuid.uuid4()), str(uuid.uuid4())]
        async with aiohttp.ClientSession() as session:
            await service.subscribe(session, f"{receiver.base}/hook")
        await asyncio.sleep(1)

        def batches() -> list[bytes]:
            return e2e_batches(service.workspace, args.events, channels)

        await warm_up(args, service, receiver, meter)

        log("dead-host: e2e to the receiver alone")
        alone = await e2e_phase(
            args, service, receiver, meter, name="dead_host_alone", batches=batches()
        )
        await wait_idle(service)
        async with aiohttp.ClientSession() as session:
            await service.subscribe(session, dead.url, channel=channels[0])
        dead_since = time.monotonic()
        log(f"dead-host: a host that never answers takes half the events (port {dead.port})")
        # Bounded by what alone took: a healthy host held back shows in its rate, not in
        # minutes of waiting.
        bound = max(15.0, 3 * (alone["ingest_to_last_arrival_s"] or args.timeout))
        early = await e2e_phase(
            args,
            service,
            receiver,
            meter,
            name="dead_host_early",
            batches=batches(),
            bound=bound,
        )
        wait = max(0.0, args.dead_for - (time.monotonic() - dead_since))
        log(f"dead-host: waiting {wait:.0f} s more, the dead host's deliveries piling up")
        await asyncio.sleep(wait)
        later = await e2e_phase(
            args,
            service,
            receiver,
            meter,
            name="dead_host_later",
            batches=batches(),
            bound=bound,
        )
        later["dead_for_s"] = round(time.monotonic() - dead_since, 1)
        results.update(dead_host_alone=alone, dead_host_early=early, dead_host_later=later)
        results["dead_host"] = {
            "alone": _rate(alone),
            "early": _arrival_rate(early),
            "later": _arrival_rate(later),
            "ratio_early": _ratio(_arrival_rate(early), _rate(alone)),
            "ratio_later": _ratio(_arrival_rate(later), _rate(alone)),
            "dead_for_s": later["dead_for_s"],
            "connections_held": dead.connections,
        }
    finally:
        for name in service.pids():
            meter.procs.pop(name, None)
        await service.stop()
        await dead.stop()


async def pgqueuer_peer(
    args: argparse.Namespace, receiver: Receiver, meter: CpuMeter, results: dict[str, Any]
) -> None:
    """The pgqueuer peer on a fresh database: warmed up as voicehooks was by its e2e before
    the ANALYZE, ANALYZE while its queue is empty, the same e2e."""
    peer = PeerService(args, f"{receiver.base}/hook")
    try:
        await peer.start()
        meter.procs.update(peer.pids())
        meter.database = peer.database
        await warm_up(args, peer, receiver, meter)
        settled = await _settle(args, peer, "e2e_pgqueuer", analyze=False)
        analyze_s = await peer.db.analyze()
        await asyncio.sleep(1)
        log("pgqueuer: e2e of the plain pgqueuer + aiohttp peer")
        figures = await e2e_phase(args, peer, receiver, meter, name="e2e_pgqueuer")
        figures.update(settled, analyze_s=analyze_s)
        results["e2e_pgqueuer"] = figures
        voicehooks = _rate(results.get("e2e_after_analyze", {}))
        results["pgqueuer"] = {
            "voicehooks": voicehooks,
            "pgqueuer": _rate(figures),
            "ratio": _ratio(voicehooks, _rate(figures)),
        }
    finally:
        for name in peer.pids():
            meter.procs.pop(name, None)
        await peer.stop()
