#!/usr/bin/env python3
"""Soak test of voicehooks under rotating faults (not CI; issue 9).

A steady stream of events for `--duration` seconds (default 600) into a `voicehooks api`, two
`voicehooks worker` processes delivering to a receiver in this process, everything on an
embedded PostgreSQL of its own; every `--fault-every` seconds (default 60) one fault, in turn:

1. `kill -9` of a worker, restarted at once;
2. the database really restarted: `pg_ctl stop -m fast`, 3 s down, `pg_ctl start`;
3. the receiver answering 503 for 20 s.

The producer behaves like the voice platform: an event that gets no 202 (503, an error, no
answer) is sent again with the same id until it is accepted. At the end the backlog drains and
the run prints what was accepted, delivered, lost (must be 0) and duplicated (at most what was
in flight at the worker kills). Exit status 0 when nothing was lost and duplicates stayed
within that bound, 1 otherwise.

    .venv/bin/python bench/soak.py [--duration S] [--rate R] [--fault-every S]
"""

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

PROJECT_DIR = Path(__file__).resolve().parent.parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))

import asyncpg  # noqa: E402
from tests.faults.harness import (  # noqa: E402
    EmbeddedDatabase,
    Ingestor,
    Service,
    create_subscriptions,
    embedded_database,
    events_short_of_deliveries,
    fault_environment,
    inbound_event,
    log_levels,
    tracebacks,
)
from tests.support import Tenant, bootstrap_tenant  # noqa: E402

from voicehooks.db.migrate import upgrade  # noqa: E402
from voicehooks.db.urls import libpq_url  # noqa: E402

PATHS = ("/a", "/b")
DB_DOWN = 3.0  # s the database stays stopped
RECEIVER_DOWN = 20.0  # s the receiver answers 503
# The service's settings for the run: retries that outlast a 20 s receiver outage
# (1+2+4+8+15 s before the 6th attempt), a 22 s lease (4 x 5 s timeout + 2 s).
SERVICE_SETTINGS = {
    "retry_delays": "1,2,4,8,15,30",
    "delivery_timeout": "5",
    "lease_margin": "2",
    "poll_interval": "1",
    "max_in_flight": "64",
}


class SoakReceiver:
    """Answers 200 (or 503 while `failing`); counts what it answered per delivery."""

    def __init__(self) -> None:
        self.failing = False
        self.port = 0
        self.ok: Counter[str] = Counter()  # webhook-id -> 2xx answers given
        self.pairs: set[tuple[str, str]] = set()  # (call id, path) answered 2xx
        self.refused = 0
        self.first_ok_after: dict[str, float] = {}
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.failing:
            self.refused += 1
            return web.Response(status=503, text="maintenance")
        self.ok[request.headers["webhook-id"]] += 1
        self.pairs.add((json.loads(body)["payload"]["id"], request.path))
        now = time.monotonic()
        for mark in [m for m in self.first_ok_after if self.first_ok_after[m] < 0]:
            self.first_ok_after[mark] = now
        return web.Response(text="ok")

    def mark(self, name: str) -> None:
        """Note the time of the next 2xx answer under `name`."""
        self.first_ok_after[name] = -1.0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class Producer:
    """Events at a steady rate; each re-sent with its id until accepted (as the platform)."""

    ingestor: Ingestor
    tenant: Tenant
    rate: float
    accepted: dict[str, float] = field(default_factory=dict)  # client id -> time of the 202
    statuses: Counter[str] = field(default_factory=Counter)
    resends: int = 0
    gave_up: list[str] = field(default_factory=list)
    sent: int = 0

    async def run(self, until: float, give_up_at: float) -> None:
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        while time.monotonic() < until:
            client_id = f"soak-{self.sent}"
            self.sent += 1
            task = asyncio.create_task(self._one(client_id, give_up_at))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(max(0.0, start + self.sent / self.rate - time.monotonic()))
        if tasks:
            await asyncio.wait(set(tasks))

    async def _one(self, client_id: str, give_up_at: float) -> None:
        item = inbound_event(self.tenant.workspace_id, client_id)
        first = True
        while time.monotonic() < give_up_at:
            if not first:
                self.resends += 1
            first = False
            answer = await self.ingestor.send([item], batch=False)
            self.statuses[str(answer.status or "no answer")] += 1
            if answer.accepted:
                self.accepted[client_id] = answer.finished
                return
            retry_after = answer.headers.get("Retry-After", "")
            await asyncio.sleep(min(float(retry_after), 2.0) if retry_after.isdigit() else 0.5)
        self.gave_up.append(client_id)


async def soak(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="voicehooks-soak-"))
    (work / "logs").mkdir()
    with embedded_database(work / "data") as database:
        url = database.url
        await upgrade(url)
        tenant = await bootstrap_tenant(url, "soak", "soak")
        receiver = SoakReceiver()
        await receiver.start()
        env = fault_environment(url, **SERVICE_SETTINGS)
        api = Service("api", env, work / "logs", "api")
        workers = [Service("worker", env, work / "logs", f"worker{n}") for n in range(2)]
        try:
            return await _run(args, database, tenant, receiver, api, workers, work)
        finally:
            for service in [api, *workers]:
                await service.stop()
            await receiver.stop()


async def _run(
    args: argparse.Namespace,
    database: EmbeddedDatabase,
    tenant: Tenant,
    receiver: SoakReceiver,
    api: Service,
    workers: list[Service],
    work: Path,
) -> int:
    for service in [api, *workers]:
        await service.start()
    await create_subscriptions(api.base_url, tenant, [receiver.url + p for p in PATHS])
    print(
        f"soak: {args.duration:.0f} s at {args.rate:g} events/s, {len(PATHS)} subscriptions, "
        f"api + {len(workers)} workers, a fault every {args.fault_every:.0f} s; logs in {work}",
        flush=True,
    )
    started = time.monotonic()
    until = started + args.duration
    timeline: list[str] = []
    kills = 0

    def note(at: float, text: str) -> None:
        line = f"  t={at - started:6.1f} s  {text}"
        timeline.append(line)
        print(line, flush=True)

    async def faults() -> None:
        nonlocal kills
        kinds = ("worker", "database", "receiver")
        n = 0
        # Faults at every, 2 x every, ... as long as each has `every` s before the end.
        while started + (n + 2) * args.fault_every <= until + 0.001:
            await asyncio.sleep(started + (n + 1) * args.fault_every - time.monotonic())
            kind = kinds[n % len(kinds)]
            victim = workers[n // len(kinds) % len(workers)]
            n += 1
            if kind == "worker":
                pid = victim.pid
                begun = time.monotonic()
                await victim.kill9()
                kills += 1
                await victim.start()
                note(
                    begun,
                    f"kill -9 {victim.name} (pid {pid}); restarted in "
                    f"{time.monotonic() - begun:.1f} s",
                )
            elif kind == "database":
                begun = time.monotonic()
                await database.stop()
                stopped = time.monotonic()
                await asyncio.sleep(DB_DOWN)
                await database.start()
                back = time.monotonic()
                mark = f"db{n}"
                receiver.mark(mark)
                delivered = await _until(lambda: receiver.first_ok_after[mark] > 0, 60)  # noqa: B023
                accepted = await _until(lambda: max(producer.accepted.values()) > back, 60)  # noqa: B023
                first_202 = min((t for t in producer.accepted.values() if t > back), default=0)
                note(
                    begun,
                    f"database restarted: stop took {stopped - begun:.1f} s, down "
                    f"{back - stopped:.1f} s; after it was back: first 202 "
                    + (f"{first_202 - back:.1f} s" if accepted else "none within 60 s")
                    + ", first delivery "
                    + (
                        f"{receiver.first_ok_after[mark] - back:.1f} s"
                        if delivered
                        else "none within 60 s"
                    ),
                )
            else:
                begun = time.monotonic()
                receiver.failing = True
                await asyncio.sleep(RECEIVER_DOWN)
                receiver.failing = False
                note(begun, f"receiver answered 503 for {RECEIVER_DOWN:.0f} s")

    async with Ingestor(api.base_url, connections=16, timeout=30) as ingestor:
        producer = Producer(ingestor, tenant, args.rate)
        fault_task = asyncio.create_task(faults())
        await producer.run(until, give_up_at=until + 120)
        await fault_task
        opened = ingestor.connections_opened
    ingest_done = time.monotonic()

    expected = {(client_id, path) for client_id in producer.accepted for path in PATHS}
    drained = await _until(lambda: expected <= receiver.pairs, args.drain_timeout)
    drain = time.monotonic() - ingest_done
    delivered = len(expected & receiver.pairs)
    lost = len(expected - receiver.pairs)
    duplicates = sum(receiver.ok.values()) - len(receiver.ok)

    connection = await asyncpg.connect(libpq_url(database.url))
    try:
        short = await events_short_of_deliveries(connection)
        states = dict(
            await connection.fetch("SELECT state, count(*) FROM deliveries GROUP BY state")
        )
    finally:
        await connection.close()
    logs = {service.name: service.log() for service in [api, *workers]}
    traces = {name: len(tracebacks(text)) for name, text in logs.items()}
    warnings = {
        service.name: len(log_levels(service.log_entries(), "warning"))
        for service in [api, *workers]
    }
    errors = {
        service.name: len(log_levels(service.log_entries(), "error", "critical"))
        for service in [api, *workers]
    }

    print("faults:", *timeline, sep="\n")
    print(f"ingest answers: {dict(sorted(producer.statuses.items()))}")
    print(f"events sent: {producer.sent} (re-sent after a refusal: {producer.resends} times)")
    print(f"client connections opened: {opened}")
    print(f"accepted: {len(producer.accepted)} events = {len(expected)} deliveries due")
    print(f"never accepted: {len(producer.gave_up)}")
    print(f"delivered: {delivered}")
    print(f"lost: {lost}")
    # At least once: a killed worker's requests in flight may be sent again, nothing else.
    bound = kills * int(SERVICE_SETTINGS["max_in_flight"])
    verdict = "" if duplicates <= bound else " EXCEEDED"
    print(
        f"duplicates: {duplicates} (at most {bound} expected: {kills} worker kills x "
        f"{SERVICE_SETTINGS['max_in_flight']} in flight){verdict}"
    )
    print(f"receiver answered 503: {receiver.refused} times")
    print(f"drain after the last event: {drain:.1f} s{'' if drained else ' (timed out)'}")
    print(f"database: deliveries by state {states}; events short of deliveries {short}")
    print(f"service logs: tracebacks {traces}, warnings {warnings}, errors {errors}")
    return 0 if lost == 0 and not producer.gave_up and short == 0 and duplicates <= bound else 1


async def _until(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (600)")
    parser.add_argument("--rate", type=float, default=20.0, help="events per second (20)")
    parser.add_argument("--fault-every", type=float, default=60.0, help="seconds (60)")
    parser.add_argument(
        "--drain-timeout", type=float, default=300.0, help="bound of the final drain (300 s)"
    )
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(soak(args)))


if __name__ == "__main__":
    main()
