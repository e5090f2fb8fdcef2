"""The command line of the delivery benchmark: every option, its default, the phases."""

from __future__ import annotations

import argparse
import os

from deliverybench.service_options import add_service_options

DESCRIPTION = """\
Delivery benchmark of voicehooks: raw HTTP limit, end-to-end throughput, latency, and the
scenarios of the issue table (idle ANALYZE, many subscriptions, a dead host, a plain pgqueuer
peer), each against a baseline measured in the same run. See bench/README.md."""

# The dispatcher's defaults (src/voicehooks/config.py); the receiver is one host, so the
# per-host bound is the concurrency the worker can reach against it.
DEFAULT_MAX_IN_FLIGHT = 256
DEFAULT_MAX_IN_FLIGHT_PER_HOST = 64

PHASES = {
    "raw": "a plain aiohttp client against the receiver: the machine's limit (start and end)",
    "e2e": "N events ingested in batches, deliveries/s counted at the receiver",
    "latency": "single events at --rate/s: ingest -> arrival p50/p95/p99",
    "analyze-idle": "e2e, ANALYZE while nothing is pending, e2e again: after / before",
    "many-subscriptions": "--many-subscriptions in other workspaces, ANALYZE, e2e: with / without",
    "dead-host": "a host that never answers takes half the events: healthy rate / alone, "
    "early and after --dead-for s",
    "pgqueuer": "the same e2e through a plain pgqueuer + aiohttp peer, after ANALYZE: "
    "voicehooks / pgqueuer",
}
PHASES_HELP = "phases:\n" + "\n".join(f"  {name:<19} {text}" for name, text in PHASES.items())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/delivery.py",
        description=DESCRIPTION,
        epilog=PHASES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=20000, help="events of the e2e phase")
    parser.add_argument(
        "--worker-processes",
        type=int,
        default=os.cpu_count() or 1,
        help="dispatcher processes of the worker (VOICEHOOKS_WORKER_PROCESSES, default one per "
        "core); --concurrency is split between them",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_MAX_IN_FLIGHT_PER_HOST,
        help="raw-client concurrency and the worker's VOICEHOOKS_MAX_IN_FLIGHT_PER_HOST "
        "(the receiver is one host, so this is the worker's in-flight limit against it)",
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=DEFAULT_MAX_IN_FLIGHT,
        help="the worker's VOICEHOOKS_MAX_IN_FLIGHT",
    )
    parser.add_argument("--rate", type=float, default=100.0, help="events/s of the latency phase")
    parser.add_argument("--duration", type=float, default=30.0, help="measured latency seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured latency seconds")
    parser.add_argument("--raw-requests", type=int, default=20000, help="requests of the raw phase")
    parser.add_argument("--ingest-concurrency", type=int, default=2, help="batches in flight")
    parser.add_argument("--timeout", type=float, default=120.0, help="bound of each e2e wait, s")
    parser.add_argument("--raw-timeout", type=float, default=60.0, help="bound of the raw phase")
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated subset of {','.join(PHASES)} (default: all, the issue table)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="repeat the whole run N times; every run is "
        "reported, with the min-max spread of each row",
    )
    parser.add_argument(
        "--embedded",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run against a new embedded PostgreSQL with autovacuum on, as production runs "
        "(default: on when every phase runs, else --admin-dsn's server)",
    )
    parser.add_argument(
        "--many-subscriptions",
        type=int,
        default=100_000,
        help="active subscriptions in other workspaces of the many-subscriptions phase",
    )
    parser.add_argument(
        "--dead-for",
        type=float,
        default=60.0,
        help="seconds the dead host has been dead at the second dead-host measurement",
    )
    add_service_options(parser, log_level_of="api/worker")
    parser.add_argument("--keep-logs", action="store_true", help="keep the api/worker logs")
    parser.add_argument(
        "--db-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="ALTER DATABASE <bench db> SET NAME = VALUE before the service connects "
        "(repeatable; e.g. random_page_cost=1.1, jit=off)",
    )
    parser.add_argument(
        "--no-settle",
        dest="settle",
        action="store_false",
        help="start each measured e2e and the latency phase right after what came before, "
        "without first settling the previous burst (VACUUM as autovacuum would, CHECKPOINT, "
        "sync)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="time the worker's SQL statements and, when py-spy is installed, sample api and "
        "worker; written to bench/results/<timestamp>-profile/ (perturbs the figures)",
    )
    args = parser.parse_args(argv)
    args.max_in_flight = max(args.max_in_flight, args.concurrency)
    unknown = set(args.phases.split(",")) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.embedded is None:
        args.embedded = set(args.phases.split(",")) == set(PHASES)
    return args
