#!/usr/bin/env python3
"""Ingestion benchmark of voicehooks: the API against the database's own limits, one run.

Per run, on a fresh database with `voicehooks api` as a subprocess and one subscription that
every event matches:

1. single        32 keep-alive aiohttp clients POST one event each, in a loop: events/s and
                 the API process's CPU per event (/proc).
2. commit limit  32 asyncpg connections, each committing one event row + one delivery row
                 per transaction (one statement): the one-commit-per-event limit.
3. batch         `POST /internal/v1/events/batch`, 500 events a batch, 2 batches in flight.
4. unnest limit  2 asyncpg connections, each committing the same 500 events + 500
                 deliveries per transaction with two `unnest` inserts: what set-based SQL
                 of this database does with those rows.
5. all tables    the same, with every row the service writes for those events: also their
                 idempotency keys (event_keys) and queue rows (delivery_queue), the first
                 delivery of each call due, the others waiting. Informational (no floor).

Ratios: single / commit limit, batch / unnest limit (and / all-tables limit). CPU per event
of api and postgres for the batch and limit phases. See bench/README.md.

    python bench/ingestion.py [--runs N] [--duration S] [--clients C] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The delivery benchmark's helpers (CPU accounting, processes, databases, options).
from deliverybench.common import RESULTS_DIR, log
from deliverybench.cpu import CpuMeter
from deliverybench.main import code_version, load_conditions
from deliverybench.processes import (
    FreshService,
    migrate_and_bootstrap,
    new_encryption_key,
    server_settings,
    voicehooks_command,
    voicehooks_env,
)
from deliverybench.profiling import summarize_collapsed
from deliverybench.service_options import add_service_options

# The floors (bench/README.md).
FLOOR_SINGLE_PER_S = 1500.0
FLOOR_BATCH_RATIO = 0.5

EVENT = "voice.inbound"
STATUSES = ("starting", "ringing", "ongoing", "completed")
CHANNEL = "b827924e-9789-4c2f-a4d5-b352175354f6"


def event_item(workspace_id: str, client_id: str, call_id: str, status: str) -> dict[str, Any]:
    """An event as the voice platform sends it (about 300 bytes of JSON)."""
    return {
        "id": client_id,
        "workspaceId": workspace_id,
        "event": EVENT,
        "occurredAt": "2026-11-24T09:30:00Z",
        "payload": {
            "id": call_id,
            "channelId": CHANNEL,
            "status": status,
            "direction": "incoming",
            "from": "+31612345678",
            "to": "+31201234567",
        },
    }


def stored_body(item: dict[str, Any]) -> str:
    """The delivery body the service stores for an event (same size for the limit phases)."""
    return json.dumps(
        {"service": "channels", "event": item["event"], "payload": item["payload"]},
        separators=(",", ":"),
    )


class Api(FreshService):
    """A fresh database, migrated and bootstrapped, and `voicehooks api` as a subprocess."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args, "voicehooks_bench_ingest", "voicehooks-bench-ingest-")
        self.encryption_key = new_encryption_key()

    @property
    def pid(self) -> int:
        return self.pids()["api"]

    async def start(self) -> None:
        await self.db.create()
        env = voicehooks_env(self.dsn, self.token, self.encryption_key, self.args.log_level)
        env["VOICEHOOKS_API_PROCESSES"] = str(self.args.api_processes)
        self.tenancy = migrate_and_bootstrap(self.args.python, env)
        self.processes.spawn(
            "api", voicehooks_command(self.args.python, "api", "--port", str(self.api_port)), env
        )
        await self.wait_ready("api")

    async def subscribe(self) -> str:
        org, ws = self.tenancy["organizationId"], self.tenancy["workspaceId"]
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{self.base}/organizations/{org}/workspaces/{ws}/webhook-subscriptions",
                # Nothing delivers in this benchmark (no worker): the deliveries stay pending.
                json={"service": "channels", "event": EVENT, "url": "http://127.0.0.1:9/hook"},
                headers={"Authorization": f"AccessKey {self.tenancy['accessKey']}"},
            ) as response,
        ):
            body = await response.json()
            if response.status != 201:
                raise RuntimeError(f"subscription refused: {response.status} {body}")
            return str(body["id"])


async def for_duration(
    workers: int, warmup: float, duration: float, step: Callable[[int, int], Awaitable[int]]
) -> tuple[int, float]:
    """Run `step(worker, n)` in `workers` loops; count the events of the steps that started
    after the warm-up and ended before its end. (events, measured seconds)."""
    start = time.monotonic()
    measure_from, measure_to = start + warmup, start + warmup + duration
    counted = [0] * workers

    async def loop(worker: int) -> None:
        n = 0
        while (began := time.monotonic()) < measure_to:
            events = await step(worker, n)
            n += 1
            if began >= measure_from and time.monotonic() <= measure_to:
                counted[worker] += events

    await asyncio.gather(*(loop(w) for w in range(workers)))
    return sum(counted), duration


def _rate(events: int, seconds: float) -> float:
    return round(events / seconds, 1) if seconds else 0.0


def _cpu_per_event(cpu: dict[str, Any], events: int, seconds: float) -> dict[str, float]:
    """µs of CPU per event of each part (api, postgres, bench). The CPU window includes the
    warm-up, so CPU is divided by every event of the window (the measured rate × its wall)."""
    all_events = events * (cpu["wall_s"] / seconds) if seconds else 0
    if not all_events:
        return {}
    return {name: round(1e6 * used / all_events, 1) for name, used in cpu["cpu_s"].items()}


async def single_phase(args: argparse.Namespace, api: Api, run: int) -> dict[str, Any]:
    ws = api.tenancy["workspaceId"]
    url = f"{api.base}/internal/v1/events"
    headers = {"Authorization": f"Bearer {api.token}"}
    meter = CpuMeter(args.admin_dsn, api.database, {"api": api.pid})
    connector = aiohttp.TCPConnector(limit=args.clients)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def step(worker: int, n: int) -> int:
            # One call per client and 4 statuses: events of a call follow one another.
            item = event_item(
                ws, f"s{run}-{worker}-{n}", f"s{run}-{worker}-{n // 4}", STATUSES[n % 4]
            )
            async with session.post(url, json=item) as response:
                body = await response.read()
                if response.status != 202:
                    raise RuntimeError(f"ingest answered {response.status}: {body[:300]!r}")
            return 1

        async with py_spy(args, api, "single", run) as profile:
            before = await meter.snapshot()
            events, seconds = await for_duration(args.clients, args.warmup, args.duration, step)
            after = await meter.snapshot()
    cpu = meter.diff(before, after)
    # The CPU window includes the warm-up; CPU per event divides by every answered event.
    all_events = events * (cpu["wall_s"] / seconds) if seconds else 0
    api_cpu = cpu["cpu_s"].get("api", 0.0)
    return {
        "events_per_s": _rate(events, seconds),
        "events": events,
        "api_cpu_ms_per_event": round(1000 * api_cpu / all_events, 3) if all_events else None,
        "cpu": cpu,
        **({"profile": profile} if profile else {}),
    }


@contextlib.asynccontextmanager
async def py_spy(args: argparse.Namespace, api: Api, phase: str, run: int) -> Any:
    """With --profile: py-spy samples the api during the phase; the summary lands in the
    dict yielded."""
    report: dict[str, Any] = {}
    found = shutil.which("py-spy") or str(Path(args.python).parent / "py-spy")
    if not args.profile or not Path(found).exists():
        if args.profile:
            log("--profile: py-spy is not installed (pip install py-spy); not profiling")
        yield report
        return
    directory = RESULTS_DIR / f"{args.stamp}-profile"
    directory.mkdir(parents=True, exist_ok=True)
    output = directory / f"run{run}-{phase}-api.txt"
    spy = subprocess.Popen(
        [
            *(found, "record", "--pid", str(api.pid), "--subprocesses", "--rate", "200"),
            *("--nonblocking", "--format", "raw", "--output", str(output)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield report
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            await asyncio.to_thread(spy.wait, 15)
        except subprocess.TimeoutExpired:
            spy.kill()
        if output.exists():
            report.update(output=str(output), **summarize_collapsed(output, top=25))


def _limit_rows(ws: str, subscription: str, items: list[dict[str, Any]]) -> tuple[list[Any], ...]:
    event_ids = [uuid.uuid4() for _ in items]
    return (
        event_ids,
        [uuid.UUID(ws)] * len(items),
        [item["id"] for item in items],
        [item["event"] for item in items],
        [item["payload"]["id"] for item in items],
        [stored_body(item) for item in items],
        [1] * len(items),
        [datetime(2026, 11, 24, 9, 30, tzinfo=UTC)] * len(items),
        [uuid.uuid4() for _ in items],
        [uuid.UUID(subscription)] * len(items),
    )


_ONE_COMMIT = """
    WITH e AS (
        INSERT INTO events (id, workspace_id, client_id, event, call_id, body, delivery_count,
                            occurred_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        RETURNING id, call_id
    )
    INSERT INTO deliveries (id, event_id, subscription_id, call_id, next_attempt_at)
    SELECT $9, e.id, $10, e.call_id, now() FROM e
"""

_UNNEST_EVENTS = """
    INSERT INTO events (id, workspace_id, client_id, event, call_id, body, delivery_count,
                        occurred_at)
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::int[], $8::timestamptz[])
"""

_UNNEST_DELIVERIES = """
    INSERT INTO deliveries (id, event_id, subscription_id, call_id, next_attempt_at)
    SELECT d.id, d.event_id, d.subscription_id, d.call_id, now()
    FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[])
         AS d(id, event_id, subscription_id, call_id)
"""


async def commit_limit_phase(
    args: argparse.Namespace, api: Api, subscription: str, run: int
) -> dict[str, Any]:
    ws = api.tenancy["workspaceId"]
    connections = [await asyncpg.connect(api.dsn, timeout=10) for _ in range(args.clients)]
    try:

        async def step(worker: int, n: int) -> int:
            item = event_item(ws, f"l{run}-{worker}-{n}", f"l{run}-{worker}-{n // 4}", "ringing")
            columns = _limit_rows(ws, subscription, [item])
            await connections[worker].execute(_ONE_COMMIT, *(column[0] for column in columns))
            return 1

        events, seconds = await for_duration(args.clients, args.warmup, args.duration, step)
    finally:
        for connection in connections:
            await connection.close()
    return {"events_per_s": _rate(events, seconds), "events": events}


async def batch_phase(args: argparse.Namespace, api: Api, run: int) -> dict[str, Any]:
    ws = api.tenancy["workspaceId"]
    url = f"{api.base}/internal/v1/events/batch"
    headers = {"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"}
    meter = CpuMeter(args.admin_dsn, api.database, {"api": api.pid})
    async with aiohttp.ClientSession(headers=headers) as session:

        async def step(worker: int, n: int) -> int:
            items = [
                event_item(ws, f"b{run}-{worker}-{n}-{i}", f"b{run}-{worker}-{n}-{i // 4}", s)
                for i, s in zip(range(args.batch), STATUSES * args.batch, strict=False)
            ]
            # Encoded before the clock matters: the client's JSON is not the service's cost.
            async with session.post(url, data=json.dumps({"events": items})) as response:
                body = await response.read()
                if response.status != 202:
                    raise RuntimeError(f"batch answered {response.status}: {body[:300]!r}")
            return len(items)

        async with py_spy(args, api, "batch", run) as profile:
            before = await meter.snapshot()
            events, seconds = await for_duration(
                args.batch_concurrency, args.warmup, args.duration, step
            )
            after = await meter.snapshot()
    return _figures(meter.diff(before, after), events, seconds, profile)


# The rows a correct service writes beyond events and deliveries: each event's idempotency
# key (the bench's events all carry a client id) and each pending delivery's queue row (the
# first of its call due, the others waiting behind it, as voicehooks.queue keeps them).
_UNNEST_KEYS = """
    INSERT INTO event_keys (workspace_id, client_id, event_id, created_at)
    SELECT k.workspace_id, k.client_id, k.event_id, now()
    FROM unnest($1::uuid[], $2::text[], $3::uuid[]) AS k(workspace_id, client_id, event_id)
"""

_UNNEST_QUEUED_DELIVERIES = """
    WITH d AS (
        INSERT INTO deliveries (id, event_id, subscription_id, call_id, next_attempt_at)
        SELECT d.id, d.event_id, d.subscription_id, d.call_id, CASE WHEN d.head THEN now() END
        FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::bool[])
             AS d(id, event_id, subscription_id, call_id, head)
        RETURNING id, created_at, subscription_id, call_id, seq, next_attempt_at
    )
    INSERT INTO delivery_queue (delivery_id, delivery_created_at, subscription_id, call_id,
                                target_host, seq, due_at)
    SELECT d.id, d.created_at, d.subscription_id, d.call_id, $6, d.seq, d.next_attempt_at
    FROM d
"""


async def unnest_limit_phase(
    args: argparse.Namespace, api: Api, subscription: str, run: int, *, all_tables: bool = False
) -> dict[str, Any]:
    ws = api.tenancy["workspaceId"]
    tag = "a" if all_tables else "u"
    connections = [
        await asyncpg.connect(api.dsn, timeout=10) for _ in range(args.batch_concurrency)
    ]
    meter = CpuMeter(args.admin_dsn, api.database, {"api": api.pid})
    try:
        target_host = await connections[0].fetchval(
            "SELECT target_host FROM subscriptions WHERE id = $1", uuid.UUID(subscription)
        )

        async def step(worker: int, n: int) -> int:
            prefix = f"{tag}{run}-{worker}-{n}"
            items = [
                event_item(ws, f"{prefix}-{i}", f"{prefix}-{i // 4}", s)
                for i, s in zip(range(args.batch), STATUSES * args.batch, strict=False)
            ]
            columns = _limit_rows(ws, subscription, items)
            connection = connections[worker]
            async with connection.transaction():
                await connection.execute(_UNNEST_EVENTS, *columns[:8])
                if not all_tables:
                    await connection.execute(
                        _UNNEST_DELIVERIES, columns[8], columns[0], columns[9], columns[4]
                    )
                    return len(items)
                await connection.execute(_UNNEST_KEYS, columns[1], columns[2], columns[0])
                # Calls are new in each batch: the first event of a call (i % 4 == 0) is due.
                heads = [i % len(STATUSES) == 0 for i in range(len(items))]
                await connection.execute(
                    _UNNEST_QUEUED_DELIVERIES,
                    *(columns[8], columns[0], columns[9], columns[4], heads, target_host),
                )
            return len(items)

        before = await meter.snapshot()
        events, seconds = await for_duration(
            args.batch_concurrency, args.warmup, args.duration, step
        )
        after = await meter.snapshot()
    finally:
        for connection in connections:
            await connection.close()
    return _figures(meter.diff(before, after), events, seconds)


def _figures(
    cpu: dict[str, Any], events: int, seconds: float, profile: Any = None
) -> dict[str, Any]:
    """A measured phase's figures: its rate, the CPU it took, that CPU per event."""
    return {
        "events_per_s": _rate(events, seconds),
        "events": events,
        "cpu": cpu,
        "cpu_us_per_event": _cpu_per_event(cpu, events, seconds),
        **({"profile": profile} if profile else {}),
    }


async def one_run(args: argparse.Namespace, run: int) -> dict[str, Any]:
    api = Api(args)
    try:
        await api.start()
        subscription = await api.subscribe()
        log(f"run {run}: single events, {args.clients} clients, {args.duration} s")
        single = await single_phase(args, api, run)
        log(f"run {run}: one commit per event, {args.clients} connections")
        commit_limit = await commit_limit_phase(args, api, subscription, run)
        log(f"run {run}: batches of {args.batch}, {args.batch_concurrency} in flight")
        batch = await batch_phase(args, api, run)
        log(f"run {run}: unnest inserts of {args.batch}, {args.batch_concurrency} connections")
        unnest_limit = await unnest_limit_phase(args, api, subscription, run)
        log(f"run {run}: unnest inserts of {args.batch} into every table the service writes")
        all_tables_limit = await unnest_limit_phase(args, api, subscription, run, all_tables=True)
    finally:
        await api.stop()
    result = {
        "single": single,
        "commit_limit": commit_limit,
        "single_ratio": round(single["events_per_s"] / commit_limit["events_per_s"], 3),
        "batch": batch,
        "unnest_limit": unnest_limit,
        "batch_ratio": round(batch["events_per_s"] / unnest_limit["events_per_s"], 3),
        "all_tables_limit": all_tables_limit,
        "batch_ratio_all_tables": round(
            batch["events_per_s"] / all_tables_limit["events_per_s"], 3
        ),
    }
    log(
        f"run {run}: single {single['events_per_s']}/s "
        f"({single['api_cpu_ms_per_event']} ms api CPU/event), "
        f"commit limit {commit_limit['events_per_s']}/s, ratio {result['single_ratio']}; "
        f"batch {batch['events_per_s']}/s, unnest limit {unnest_limit['events_per_s']}/s, "
        f"ratio {result['batch_ratio']}"
    )
    return result


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "started_at": args.stamp,
        "code": code_version(),
        "postgres": await server_settings(args.admin_dsn),
        "load_before": load_conditions(),
        "options": {
            name: getattr(args, name)
            for name in (
                "runs",
                "duration",
                "warmup",
                "clients",
                "batch",
                "batch_concurrency",
                "api_processes",
            )
        },
        "runs": [],
    }
    for run in range(1, args.runs + 1):
        results["runs"].append(await one_run(args, run))
    results["load_after"] = load_conditions()
    return results


def _spread(values: list[float]) -> str:
    return f"{min(values):,.3g}–{max(values):,.3g}" if values else "–"


def print_summary(results: dict[str, Any], path: Path | None) -> None:
    runs = results["runs"]
    rows = [
        (
            f"single events/s ({results['options']['clients']} clients, "
            f"{results['options']['api_processes']} api processes)",
            [r["single"]["events_per_s"] for r in runs],
        ),
        ("  api CPU ms per event", [r["single"]["api_cpu_ms_per_event"] or 0 for r in runs]),
        ("one-commit-per-event limit /s", [r["commit_limit"]["events_per_s"] for r in runs]),
        ("  ratio single / limit", [r["single_ratio"] for r in runs]),
        ("batch events/s (500/batch)", [r["batch"]["events_per_s"] for r in runs]),
        ("unnest insert limit events/s", [r["unnest_limit"]["events_per_s"] for r in runs]),
        ("  ratio batch / limit", [r["batch_ratio"] for r in runs]),
        ("all-tables unnest limit events/s", [r["all_tables_limit"]["events_per_s"] for r in runs]),
        ("  ratio batch / all-tables limit", [r["batch_ratio_all_tables"] for r in runs]),
    ]
    for phase, label in (
        ("batch", "batch"),
        ("unnest_limit", "unnest limit"),
        ("all_tables_limit", "all-tables limit"),
    ):
        for part in ("api", "postgres", "bench"):
            if phase != "batch" and part == "api":
                continue  # idle in the limit phases
            rows.append(
                (
                    f"  {label} {part} CPU µs/event",
                    [r[phase].get("cpu_us_per_event", {}).get(part, 0.0) for r in runs],
                )
            )
    print(f"\ncode {results['code'].get('commit')}  postgres {results['postgres']}")
    print(
        f"{'':42}" + "".join(f"{'run ' + str(i + 1):>10}" for i in range(len(runs))) + "   min–max"
    )
    for label, values in rows:
        print(f"{label:42}" + "".join(f"{v:>10,.3g}" for v in values) + f"   {_spread(values)}")
    for i, r in enumerate(runs):
        for phase in ("single", "batch", "unnest_limit", "all_tables_limit"):
            cpu = r[phase]["cpu"]
            note = " (DISTURBED)" if cpu.get("disturbed") else ""
            print(
                f"run {i + 1} {phase:16} cpu s {cpu['cpu_s']} in {cpu['wall_s']} s wall, "
                f"machine busy {cpu.get('machine_busy_pct')}%, "
                f"others {cpu['other_processes_cpu_s']} {cpu['other_processes_top']}{note}"
            )
            profile = r[phase].get("profile")
            if profile and profile.get("samples"):
                print(f"  py-spy self %: {profile['self_pct'][:12]}")
    single_ok = min(r["single"]["events_per_s"] for r in runs) >= FLOOR_SINGLE_PER_S
    batch_ok = min(r["batch_ratio"] for r in runs) >= FLOOR_BATCH_RATIO
    print(
        f"verdict: single ≥ {FLOOR_SINGLE_PER_S:.0f}/s {'ok' if single_ok else 'BELOW FLOOR'}; "
        f"batch ratio ≥ {FLOOR_BATCH_RATIO} {'ok' if batch_ok else 'BELOW FLOOR'}"
    )
    results["verdict"] = {"single_ok": single_ok, "batch_ok": batch_ok}
    print(f"load average before {results['load_before']} after {results['load_after']}")
    if path is not None:
        print(f"written to {path}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs, each on a fresh database")
    parser.add_argument("--duration", type=float, default=10.0, help="measured s per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured s before each")
    parser.add_argument("--clients", type=int, default=32, help="single-event clients")
    parser.add_argument("--batch", type=int, default=500, help="events per batch")
    parser.add_argument("--batch-concurrency", type=int, default=2, help="batches in flight")
    parser.add_argument(
        "--api-processes",
        type=int,
        default=os.cpu_count() or 1,
        help="processes of `voicehooks api` (VOICEHOOKS_API_PROCESSES; default one per core, as "
        "a production API is run)",
    )
    add_service_options(parser, log_level_of="the api")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the api with py-spy during the single and batch phases (perturbs the "
        "figures); written to bench/results/<timestamp>-profile/",
    )
    args = parser.parse_args(argv)
    args.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = uvloop.run(run_all(args))
    path = None
    if not args.no_save:
        path = RESULTS_DIR / f"ingestion-{args.stamp}.json"
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    print_summary(results, path)
    if path is not None:
        path.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(results["verdict"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
