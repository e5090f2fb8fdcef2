"""One invocation of the delivery benchmark: `--runs` runs of the chosen phases, each run's
figures saved and summarized, then the issue table over all runs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

import aiohttp

from deliverybench import scenarios
from deliverybench.common import PROJECT_DIR, RESULTS_DIR, log
from deliverybench.cpu import CpuMeter
from deliverybench.options import parse_args
from deliverybench.phases import e2e_phase, latency_phase, raw_phase, settle
from deliverybench.processes import Service, postgres, server_settings
from deliverybench.profiling import Profiler, no_profile
from deliverybench.receiver import Receiver
from deliverybench.report import exit_status, print_issue_table, print_summary, verdict
from deliverybench.traffic import BATCH_SIZE


def code_version() -> dict[str, Any]:
    """The commit measured, and whether the working tree differs from it (it often does)."""
    version: dict[str, Any] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        version["commit"] = head.stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        version["modified"] = [line[3:] for line in status.stdout.splitlines()]
    return version


def load_conditions() -> dict[str, Any]:
    conditions: dict[str, Any] = {"cores": os.cpu_count()}
    with contextlib.suppress(OSError, AttributeError):
        conditions["loadavg"] = [round(v, 2) for v in os.getloadavg()]
    return conditions


async def run(args: argparse.Namespace, stamp: str) -> dict[str, Any]:
    phases = set(args.phases.split(","))
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            "events": args.events,
            "concurrency": args.concurrency,
            "max_in_flight": args.max_in_flight,
            "rate": args.rate,
            "duration": args.duration,
            "log_level": args.log_level,
            "phases": sorted(phases),
            "profile": args.profile,
            "settle": args.settle,
            "db_settings": args.db_setting,
            "embedded": args.embedded,
            "many_subscriptions": args.many_subscriptions,
            "dead_for": args.dead_for,
        },
        "code": code_version(),
        "postgres": await server_settings(args.admin_dsn),
        "load_before": load_conditions(),
    }
    if results["postgres"].get("autovacuum") == "off":
        log("note: autovacuum is off on this server: bench tables are never analyzed/vacuumed")
    receiver = Receiver()
    receiver.start()
    profiler = None
    if args.profile:
        directory = RESULTS_DIR / f"{stamp}-profile"
        directory.mkdir(parents=True, exist_ok=True)
        profiler = Profiler(directory, args.python)
        if profiler.py_spy is None:
            log("profile: py-spy not found, only the worker's statements are timed")
        results["profile_dir"] = str(directory)
    service = Service(args, profiler)
    profile = profiler.phase if profiler else no_profile

    async def profiled(name: str, phase: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
        """Run a phase under the profiler (when asked for); its report joins the figures."""
        async with profile(name) as report:
            figures = await phase
        if report:
            figures["profile"] = report
        return figures

    meter = CpuMeter(args.admin_dsn, service.database, {"receiver": receiver.process.pid or 0})
    try:
        if "raw" in phases:
            log(f"raw: {args.raw_requests} POSTs at concurrency {args.concurrency}")
            results["raw"] = await raw_phase(args, receiver, meter)
            log(f"raw: {results['raw']['requests_per_s']} requests/s")
        if phases & {"e2e", "latency"}:
            await service.start()
            meter.procs.update(service.pids())
            if profiler:
                profiler.procs.update(service.pids())
            async with aiohttp.ClientSession() as session:
                await service.subscribe(session, f"{receiver.base}/hook")
            await asyncio.sleep(1)  # let the worker's first housekeeping pass go by
        if "e2e" in phases:
            log(f"e2e: ingesting {args.events} events in batches of {BATCH_SIZE}")
            results["e2e"] = await profiled("e2e", e2e_phase(args, service, receiver, meter))
            log(f"e2e: {results['e2e']['deliveries_per_s']} deliveries/s")
            if args.settle and "latency" in phases:
                # Latency is that of a steady 100 events/s, not of the burst's aftermath
                # (measured: ingest ack p99 167 ms in a run where autovacuum of the burst
                # overlapped it, 12-15 ms in runs where it did not or that vacuumed first).
                results.update(await settle(service.dsn, analyze=True))
                log(
                    f"settle: e2e's rows vacuumed in {results['vacuum_s']} s (as autovacuum "
                    f"would), its writes on disk after {results['settle_s']} s"
                )
            await asyncio.sleep(1)
        if "latency" in phases:
            log(f"latency: {args.rate} events/s for {args.warmup} + {args.duration} s")
            results["latency"] = await profiled(
                "latency", latency_phase(args, service, receiver, meter)
            )
            log(f"latency: {results['latency']['ingest_to_arrival']}")
        if args.keep_logs:
            results["service_logs"] = str(service.log_dir)
        await service.stop()
        for name in service.pids():
            meter.procs.pop(name, None)
        # Each scenario on a database of its own, compared with a baseline inside it.
        if phases & {"analyze-idle", "many-subscriptions", "pgqueuer"}:
            await scenarios.analyze_chain(args, phases, receiver, meter, results)
        if "dead-host" in phases:
            await scenarios.dead_host(args, receiver, meter, results)
        if "pgqueuer" in phases:
            await scenarios.pgqueuer_peer(args, receiver, meter, results)
        if "raw" in phases and phases - {"raw"}:
            # Again at the end (service idle): the ceiling of a shared or virtual machine moves.
            results["raw_after"] = await raw_phase(args, receiver, meter)
            log(f"raw (again): {results['raw_after']['requests_per_s']} requests/s")
    finally:
        results["load_after"] = load_conditions()
        await service.stop()
        receiver.stop()
    results["verdict"] = verdict(results)
    return results


async def run_all(args: argparse.Namespace) -> list[tuple[dict[str, Any], str]]:
    done: list[tuple[dict[str, Any], str]] = []
    async with postgres(args) as admin_dsn:
        args.admin_dsn = admin_dsn
        for index in range(args.runs):
            if args.runs > 1:
                log(f"run {index + 1} of {args.runs}")
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            started = time.monotonic()
            results = await run(args, stamp)
            results["total_s"] = round(time.monotonic() - started, 1)
            done.append((results, stamp))
    return done


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = asyncio.run(run_all(args))
    for results, stamp in runs:
        path = None
        if not args.no_save:
            path = RESULTS_DIR / f"{stamp}.json"
            RESULTS_DIR.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=2) + "\n")
        print_summary(results, path)
    print_issue_table([results for results, _ in runs])
    return max(exit_status(results) for results, _ in runs)


if __name__ == "__main__":
    sys.exit(main())
