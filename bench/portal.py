#!/usr/bin/env python3
"""Portal benchmark: server time of every portal page with 1M deliveries in one workspace.

1. fill     a fresh database `voicehooks_bench_portal_<random>`, migrated; one organization
            and workspace; `--subscriptions` subscriptions created through the API; then
            `--deliveries` deliveries (one event each, round robin over the subscriptions)
            spread evenly over the last `--days` days (the retention period), with their
            attempts: 2% failed after 4 attempts, the newest 0.05% pending, the rest
            succeeded at the first attempt. VACUUM ANALYZE afterwards, as autovacuum would.
2. measure  the app in this process (the ASGI app `voicehooks serve` runs, no network);
            each page is requested `--requests` times per run after 10 unmeasured ones,
            for `--runs` runs; the time is the request's, from the call to its last byte.

Prints p50/p95/max per page and run, the spread of p95 over runs, and whether every p95 is
within the target (50 ms). Writes the figures to bench/results/ unless --no-save.

    python bench/portal.py [--deliveries N] [--runs R] [--requests N] [--keep-db]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
TARGET_P95_MS = 50.0
FILL_BATCH = 100_000
BODY = json.dumps(
    {
        "service": "channels",
        "event": "voice.inbound",
        "payload": {
            "id": "call-0",
            "channelId": "b827924e-9789-4c2f-a4d5-b352175354f6",
            "status": "completed",
            "direction": "incoming",
            "from": "+31612345678",
            "to": "+31201234567",
        },
    },
    separators=(",", ":"),
)

# One batch of the fill: rows g in [lo, hi), delivery g created at now - span * (N - g) / N.
_FILL = """
CREATE TEMP TABLE fill ON COMMIT DROP AS
SELECT g,
       gen_random_uuid() AS event_id,
       gen_random_uuid() AS delivery_id,
       ($3::uuid[])[1 + g % array_length($3::uuid[], 1)] AS subscription_id,
       $4::timestamptz - make_interval(secs => $5 * ($6 - g)::float8 / $6) AS created_at,
       CASE WHEN g % 50 = 0 THEN 'failed'
            WHEN g > $6 - $6 / 2000 THEN 'pending'
            ELSE 'succeeded' END AS state
FROM generate_series($1::bigint, $2::bigint - 1) AS g;

INSERT INTO events (id, workspace_id, client_id, event, call_id, body, delivery_count, created_at)
SELECT event_id, $7, 'evt-' || g, 'voice.inbound', 'call-' || (g / 4), $8, 1, created_at
FROM fill ORDER BY g;

INSERT INTO event_keys (workspace_id, client_id, event_id, created_at)
SELECT $7, 'evt-' || g, event_id, created_at FROM fill;

INSERT INTO deliveries (id, event_id, subscription_id, call_id, state, attempts,
                        next_attempt_at, created_at, updated_at)
SELECT delivery_id, event_id, subscription_id, 'call-' || (g / 4), state,
       CASE state WHEN 'failed' THEN 4 WHEN 'pending' THEN 1 ELSE 1 END,
       CASE WHEN state = 'pending' THEN $4::timestamptz + interval '1 hour' END,
       created_at, created_at
FROM fill ORDER BY g;

INSERT INTO attempts (id, delivery_id, subscription_id, event_id, event, attempt,
                      execution_status, duration_ms, response_status_code, error,
                      response_body, created_at)
SELECT gen_random_uuid(), delivery_id, subscription_id, event_id, 'voice.inbound', n,
       CASE WHEN state = 'succeeded' THEN 'succeeded' ELSE 'failed' END,
       20 + (g * 7 + n) % 180,
       CASE WHEN state = 'succeeded' THEN 200 ELSE 503 END,
       NULL, CASE WHEN state = 'succeeded' THEN 'ok' ELSE 'unavailable' END,
       created_at + make_interval(secs => n)
FROM fill CROSS JOIN LATERAL generate_series(1, CASE state WHEN 'failed' THEN 4 ELSE 1 END) n;
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def database_dsn(admin_dsn: str, database: str) -> str:
    parts = urlsplit(admin_dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, ""))


async def fill(dsn: str, args: argparse.Namespace, workspace_id: str, subscriptions: list) -> None:
    from voicehooks.db import partitions

    connection = await asyncpg.connect(dsn)
    try:
        now = datetime.now(UTC)
        span = args.days * 86400
        # Every day the fill covers has its partitions (beyond the retention horizon too).
        await partitions.ensure_partitions(
            connection,
            partitions.days_between((now - timedelta(seconds=span)).date(), now.date()),
        )
        started = time.monotonic()
        for lo in range(0, args.deliveries, FILL_BATCH):
            hi = min(lo + FILL_BATCH, args.deliveries)
            async with connection.transaction():
                # asyncpg binds no parameters in a multi-statement string: the values (numbers,
                # uuids, a timestamp, the fixed body) are written into each statement.
                for statement in _FILL.strip().split(";\n\n"):
                    await connection.execute(
                        _bind(statement, lo, hi, subscriptions, now, span, args, workspace_id)
                    )
            log(f"fill: {hi:,} deliveries ({time.monotonic() - started:.0f} s)")
        log("fill: VACUUM ANALYZE")
        for table in ("events", "deliveries", "attempts", "subscriptions"):
            await connection.execute(f"VACUUM ANALYZE {table}")
    finally:
        await connection.close()


def _bind(
    statement: str,
    lo: int,
    hi: int,
    subscriptions: list,
    now: datetime,
    span: float,
    args: argparse.Namespace,
    workspace_id: str,
) -> str:
    """The fill's statements with their values written in (all are numbers, uuids, times)."""
    values = {
        "$1::bigint": f"{lo}::bigint",
        "$2::bigint": f"{hi}::bigint",
        "$3::uuid[]": "ARRAY[" + ",".join(f"'{s}'::uuid" for s in subscriptions) + "]",
        "$4::timestamptz": f"'{now.isoformat()}'::timestamptz",
        "$5": f"{float(span)}",
        "$6": f"{int(args.deliveries)}",
        "$7": f"'{workspace_id}'::uuid",
        "$8": "'" + BODY.replace("'", "''") + "'",
    }
    for placeholder, value in values.items():
        statement = statement.replace(placeholder, value)
    return statement


async def prepare(args: argparse.Namespace) -> tuple[str, str]:
    """A fresh, migrated database; returns (its URL, its name)."""
    from voicehooks.db.migrate import upgrade

    database = f"voicehooks_bench_portal_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(args.admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    dsn = database_dsn(args.admin_dsn, database)
    await upgrade(dsn)
    return dsn, database


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def measure(args: argparse.Namespace, dsn: str) -> dict[str, Any]:
    from voicehooks.api.app import create_app
    from voicehooks.config import Settings
    from voicehooks.observability.logging import configure_logging
    from voicehooks.tenancy.service import bootstrap_database

    configure_logging("WARNING")  # a request line each would be most of the measured work

    # Signing keys are stored encrypted: a key of the run's own (the database is thrown away).
    settings = Settings(  # type: ignore[call-arg]
        database_url=dsn,
        allow_http_targets=True,
        public_url="http://portal.bench",
        encryption_keys=base64.b64encode(secrets.token_bytes(32)).decode(),
    )
    tenant = await bootstrap_database(dsn, "bench", "main")
    app = create_app(settings, dsn)
    headers = {"Authorization": f"AccessKey {tenant.access_key}"}
    base = f"/organizations/{tenant.organization_id}/workspaces/{tenant.workspace_id}"
    transport = httpx.ASGITransport(app=app)
    results: dict[str, Any] = {}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://portal.bench") as client,
    ):
        subscriptions = []
        for index in range(args.subscriptions):
            response = await client.post(
                f"{base}/webhook-subscriptions",
                headers=headers,
                json={
                    "service": "channels",
                    "event": "voice.inbound",
                    "url": f"https://receiver-{index}.example.com/hook",
                    "signingKey": f"bench-signing-key-{index:04d}",
                    # At most 5 subscriptions may share event and filters: one channel each.
                    "eventFilters": [{"key": "channelId", "value": str(uuid.uuid4())}],
                },
            )
            assert response.status_code == 201, response.text
            subscriptions.append(response.json()["id"])
        log(
            f"fill: {args.deliveries:,} deliveries over {args.days} days, "
            f"{len(subscriptions)} subscriptions"
        )
        await fill(dsn, args, str(tenant.workspace_id), subscriptions)

        link = await client.post(f"{base}/portal-sessions", headers=headers, json={})
        token = link.json()["url"].split("token=", 1)[1]
        entered = await client.get(f"/portal/enter?token={token}")
        assert entered.status_code == 303, entered.text

        connection = await asyncpg.connect(dsn)
        try:
            sample = await connection.fetchrow(
                "SELECT d.id, d.call_id, d.event_id, e.client_id FROM deliveries d "
                "JOIN events e ON e.id = d.event_id ORDER BY d.seq LIMIT 1 OFFSET $1",
                args.deliveries // 3,
            )
            failed_one = await connection.fetchval(
                "SELECT id FROM deliveries WHERE state = 'failed' ORDER BY seq DESC LIMIT 1"
            )
        finally:
            await connection.close()
        first_page = await client.get("/portal/deliveries")
        older = first_page.text.split('href="/portal/deliveries?after=', 1)[1].split('"', 1)[0]
        two_weeks = datetime.now(UTC) - timedelta(days=14)
        window = (
            f"since={(two_weeks - timedelta(hours=1)).strftime('%Y-%m-%dT%H:%M:%S')}"
            f"&until={two_weeks.strftime('%Y-%m-%dT%H:%M:%S')}"
        )
        pages = {
            "overview": "/portal/",
            "subscriptions": "/portal/subscriptions",
            "subscription": f"/portal/subscriptions/{subscriptions[0]}",
            "verify": f"/portal/subscriptions/{subscriptions[0]}/verify",
            "deliveries": "/portal/deliveries",
            "deliveries, page 2": f"/portal/deliveries?after={older}",
            "deliveries, failed": "/portal/deliveries?state=failed",
            "deliveries, one subscription": f"/portal/deliveries?subscription={subscriptions[1]}",
            "deliveries, 1 h two weeks ago": f"/portal/deliveries?{window}",
            "deliveries, by call id": f"/portal/deliveries?q={sample['call_id']}",
            "deliveries, by client event id": f"/portal/deliveries?q={sample['client_id']}",
            "deliveries, by event uuid": f"/portal/deliveries?q={sample['event_id']}",
            "delivery": f"/portal/deliveries/{sample['id']}",
            "delivery (failed, 4 attempts)": f"/portal/deliveries/{failed_one}",
            "event catalog": "/portal/events",
        }
        # An hour later every stored hour is due to be counted again (a page counts a few).
        pages["overview, an hour later"] = "/portal/"
        aged = "UPDATE delivery_hours SET refreshed_at = now() - interval '2 hours'"
        connection = await asyncpg.connect(dsn)
        for run in range(1, args.runs + 1):
            figures = {}
            for name, path in pages.items():
                for _ in range(10):  # warm-up: plans cached, pages in memory
                    assert (await client.get(path)).status_code == 200, path
                times = []
                for _ in range(args.requests):
                    if name == "overview, an hour later":
                        await connection.execute(aged)
                    started = time.perf_counter()
                    response = await client.get(path)
                    times.append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200, (path, response.status_code)
                figures[name] = {
                    "p50_ms": round(percentile(times, 0.5), 2),
                    "p95_ms": round(percentile(times, 0.95), 2),
                    "max_ms": round(max(times), 2),
                }
            results[f"run {run}"] = figures
            log(f"run {run}: " + ", ".join(f"{n} {f['p95_ms']}" for n, f in figures.items()))
        await connection.close()
    await app.state.engine.dispose()
    return {"pages": list(pages), "runs": results}


def report(figures: dict[str, Any]) -> bool:
    runs = figures["runs"]
    names = figures["pages"]
    width = max(len(name) for name in names)
    header = f"{'page':<{width}}  " + "  ".join(f"{run:>22}" for run in runs) + "  p95 spread"
    print(header)
    print(f"{'':<{width}}  " + "  ".join(f"{'p50 / p95 / max ms':>22}" for _ in runs))
    within = True
    for name in names:
        cells = []
        p95s = []
        for run in runs.values():
            f = run[name]
            p95s.append(f["p95_ms"])
            cells.append(f"{f['p50_ms']:6.1f} /{f['p95_ms']:6.1f} /{f['max_ms']:6.1f}")
        spread = max(p95s) - min(p95s)
        within = within and max(p95s) <= TARGET_P95_MS
        print(f"{name:<{width}}  " + "  ".join(f"{c:>22}" for c in cells) + f"  {spread:6.1f}")
    verdict = "within" if within else "NOT within"
    print(f"\nevery page's p95 {verdict} {TARGET_P95_MS:.0f} ms in every run")
    return within


async def run(args: argparse.Namespace) -> int:
    dsn, database = (args.database_url, None) if args.database_url else await prepare(args)
    log(f"database {database or dsn}")
    try:
        figures = await measure(args, dsn)
    finally:
        if database is not None and not args.keep_db:
            admin = await asyncpg.connect(args.admin_dsn)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            finally:
                await admin.close()
    within = report(figures)
    if not args.no_save:
        RESULTS_DIR.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = RESULTS_DIR / f"portal-{stamp}.json"
        path.write_text(json.dumps({"args": vars(args) | {"admin_dsn": "…"}, **figures}, indent=2))
        log(f"figures written to {path.relative_to(BENCH_DIR.parent)}")
    return 0 if within else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=1_000_000)
    parser.add_argument("--subscriptions", type=int, default=10)
    parser.add_argument("--days", type=float, default=30, help="the span the deliveries cover")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=100, help="per page and run")
    parser.add_argument(
        "--admin-dsn",
        default=os.environ.get("BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a Postgres connection allowed to CREATE/DROP DATABASE",
    )
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    parser.add_argument(
        "--database-url", help="an empty migrated database to fill instead of a new one"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
