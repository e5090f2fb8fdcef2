"""The measured phases: the raw HTTP limit, end-to-end throughput, latency at a steady rate.

A phase gets a service (voicehooks or the pgqueuer peer: anything with `base`, `token`,
`workspace`, `dsn`, `database` and `backlog()`), the receiver and the CPU meter, and returns
its figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from deliverybench.activity import sampled
from deliverybench.common import log, percentile
from deliverybench.cpu import CpuMeter
from deliverybench.processes import execute
from deliverybench.receiver import Receiver, receiver_reset, receiver_stats
from deliverybench.traffic import (
    BATCH_SIZE,
    EVENT,
    delivery_body,
    e2e_batches,
    representative_headers,
)

SLOWEST_KEPT = 10  # latency events listed with their send time


# -- the raw limit ------------------------------------------------------------------------------


async def raw_phase(args: argparse.Namespace, receiver: Receiver, meter: CpuMeter) -> dict:
    url = f"{receiver.base}/hook"
    body = delivery_body(
        {"id": f"raw-{uuid.uuid4()}", "channelId": str(uuid.uuid4()), "status": "ringing"}
    )
    total = args.raw_requests
    warmup = min(total, args.concurrency * 8)
    ids = [str(uuid.uuid4()) for _ in range(warmup + total)]
    errors = 0

    connector = aiohttp.TCPConnector(limit=args.concurrency, limit_per_host=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def run(indexes: range) -> None:
            nonlocal errors
            todo = iter(indexes)

            async def one_client() -> None:
                nonlocal errors
                for i in todo:  # shared: each index is sent once
                    async with session.post(
                        url, data=body, headers=representative_headers(ids[i])
                    ) as response:
                        await response.read()
                        if response.status != 200:
                            errors += 1

            await asyncio.wait_for(
                asyncio.gather(*(one_client() for _ in range(args.concurrency))),
                timeout=args.raw_timeout,
            )

        await receiver_reset(session, receiver.base, "raw-warmup")
        await run(range(warmup))
        await receiver_reset(session, receiver.base, "raw")
        before = await meter.snapshot()
        started = time.perf_counter()
        await run(range(warmup, warmup + total))
        elapsed = time.perf_counter() - started
        after = await meter.snapshot()
        stats = await receiver_stats(session, receiver.base)

    return {
        "requests": total,
        "concurrency": args.concurrency,
        "body_bytes": len(body),
        "elapsed_s": round(elapsed, 3),
        "requests_per_s": round(total / elapsed, 1),
        "received_distinct": stats["distinct"],
        "errors": errors,
        "cpu": meter.diff(before, after),
    }


# -- end-to-end throughput ------------------------------------------------------------------------


async def e2e_phase(
    args: argparse.Namespace,
    service: Any,
    receiver: Receiver,
    meter: CpuMeter,
    *,
    name: str = "e2e",
    batches: list[bytes] | None = None,
    bound: float | None = None,
    events: int | None = None,
) -> dict:
    """`--events` events ingested in batches as fast as the service takes them; every one
    must arrive at the receiver (other subscriptions, e.g. to a dead host, may take more)."""
    total = events or args.events
    batches = batches if batches is not None else e2e_batches(service.workspace, total)
    headers = {"Authorization": f"Bearer {service.token}", "content-type": "application/json"}
    batch_seconds: list[float] = []
    accepted = 0
    problems: list[str] = []

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await receiver_reset(session, receiver.base, name)
        todo = iter(batches)

        async def ingest_client() -> None:
            nonlocal accepted
            for body in todo:
                started = time.perf_counter()
                async with session.post(
                    f"{service.base}/internal/v1/events/batch", data=body, headers=headers
                ) as response:
                    answer = await response.read()
                    if response.status != 202:
                        problems.append(f"batch answered {response.status}: {answer[:300]!r}")
                        continue
                batch_seconds.append(time.perf_counter() - started)
                accepted += sum(r["deliveries"] for r in json.loads(answer)["results"])

        async with sampled(service.dsn, service.database) as activity:
            before = await meter.snapshot()
            ingest_start = time.time()
            await asyncio.wait_for(
                asyncio.gather(*(ingest_client() for _ in range(args.ingest_concurrency))),
                timeout=args.timeout,
            )
            ingest_end = time.time()
            log(
                f"{name}: ingested {total} events in {ingest_end - ingest_start:.2f} s "
                f"({accepted} deliveries created)"
            )

            deadline = time.monotonic() + (bound or args.timeout)
            next_report = time.monotonic() + 5
            stats = await receiver_stats(session, receiver.base)
            while stats["distinct"] < total and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                stats = await receiver_stats(session, receiver.base)
                if time.monotonic() >= next_report:
                    next_report += 5
                    log(f"{name}: {stats['distinct']}/{total} delivered")
            after = await meter.snapshot()
        complete = stats["distinct"] >= total

        # Until the service reports nothing due or in flight (it records outcomes in batches
        # after sending); a dead host's deliveries never get there, so only when asked.
        recorded_at = None
        if accepted == total:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if await service.backlog(session) == 0:
                    recorded_at = time.time()
                    break
                await asyncio.sleep(0.2)

    first, last = stats["first"], stats["last"]
    arrivals_span = (last - first) if first and last else None
    batch_seconds.sort()
    return {
        "service": service.label,
        "events": total,
        "batch_size": BATCH_SIZE,
        "ingest_concurrency": args.ingest_concurrency,
        "deliveries_created": accepted,
        "received_requests": stats["requests"],
        "received_distinct": stats["distinct"],
        "duplicates": stats["requests"] - stats["distinct"],
        "complete": complete,
        "problems": problems,
        "ingest_s": round(ingest_end - ingest_start, 3),
        "ingest_events_per_s": round(total / (ingest_end - ingest_start), 1),
        "ingest_batch_s_p50": round(percentile(batch_seconds, 50) or 0, 3),
        "ingest_batch_s_max": round(batch_seconds[-1], 3) if batch_seconds else None,
        "first_arrival_after_ingest_start_s": round(first - ingest_start, 3) if first else None,
        "arrivals_span_s": round(arrivals_span, 3) if arrivals_span else None,
        "deliveries_per_s": (
            round((stats["distinct"] - 1) / arrivals_span, 1) if arrivals_span else None
        ),
        "ingest_to_last_arrival_s": round(last - ingest_start, 3) if last else None,
        "deliveries_per_s_from_ingest": (
            round(stats["distinct"] / (last - ingest_start), 1) if last else None
        ),
        "all_recorded_after_ingest_start_s": (
            round(recorded_at - ingest_start, 3) if recorded_at else None
        ),
        "cpu": meter.diff(before, after),
        "postgres_activity": activity,
    }


# -- latency at a steady rate -------------------------------------------------------------------


def _dirty_kib() -> int:
    """Dirty and under-writeback page cache of the machine, KiB (0 where /proc is missing)."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    except OSError:
        return 0
    return sum(int(fields.get(name, "0 kB").split()[0]) for name in ("Dirty", "Writeback"))


async def settle_writes(dsn: str, bound: float = 60.0) -> float:
    """Write what the database holds in memory out: a checkpoint, then the kernel's dirty
    pages. Otherwise the kernel flushes them about 30 s later, in the middle of the next
    phase, and every commit that waits for the WAL waits behind that flush."""
    started = time.monotonic()
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute("CHECKPOINT", timeout=bound)
    finally:
        await conn.close()
    await asyncio.to_thread(os.sync)
    while _dirty_kib() > 16 * 1024 and time.monotonic() - started < bound:
        await asyncio.sleep(0.2)
    return round(time.monotonic() - started, 2)


async def settle(dsn: str, *, analyze: bool) -> dict[str, float]:
    """What an idle service's database does within a minute or two after a burst, done now so
    that it does not overlap the next measurement: autovacuum cleans up the burst (VACUUM of
    the whole database, with ANALYZE when `analyze`), the checkpointer and the kernel write
    it out (`settle_writes`). A comparison settles before each of its measurements, so that
    the two sides differ in what the row is about only, not in whether autovacuum of the
    previous burst happened to overlap them (it overlaps a 7 s phase or not by chance: a
    VACUUM of 20k deliveries right after a checkpoint writes a full-page image of every page
    it touches, and commits wait behind those WAL flushes)."""
    started = time.monotonic()
    await execute(dsn, "VACUUM ANALYZE" if analyze else "VACUUM", timeout=120)
    vacuum_s = round(time.monotonic() - started, 2)
    return {"vacuum_s": vacuum_s, "settle_s": await settle_writes(dsn)}


async def latency_phase(
    args: argparse.Namespace, service: Any, receiver: Receiver, meter: CpuMeter
) -> dict:
    run = secrets.token_hex(4)
    workspace = service.workspace
    channel = str(uuid.uuid4())
    warmup_count = int(args.warmup * args.rate)
    total = warmup_count + int(args.duration * args.rate)
    headers = {"Authorization": f"Bearer {service.token}", "content-type": "application/json"}
    acked: dict[str, float] = {}
    send_lag: list[float] = []
    errors: list[str] = []

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await receiver_reset(session, receiver.base, "latency")

        async def send(i: int) -> None:
            call_id = f"lat-{run}-{i}"
            payload = {"id": call_id, "channelId": channel, "status": "ringing"}
            payload["sentAt"] = time.time()
            body = json.dumps({"workspaceId": workspace, "event": EVENT, "payload": payload})
            try:
                async with session.post(
                    f"{service.base}/internal/v1/events", data=body.encode(), headers=headers
                ) as response:
                    await response.read()
                    if response.status != 202:
                        errors.append(f"{response.status}")
                        return
                acked[call_id] = time.time() - payload["sentAt"]
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors.append(type(exc).__name__)

        async with sampled(service.dsn, service.database) as activity:
            tasks = []
            start = time.monotonic() + 0.05
            before = None
            for i in range(total):
                if i == warmup_count:
                    before = await meter.snapshot()
                target = start + i / args.rate
                delay = target - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                send_lag.append(time.monotonic() - target)
                tasks.append(asyncio.create_task(send(i)))
            await asyncio.wait(tasks, timeout=30)
            for task in tasks:
                task.cancel()

            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                stats = await receiver_stats(session, receiver.base)
                if stats["distinct"] >= len(acked):
                    break
                await asyncio.sleep(0.2)
            after = await meter.snapshot()
        stats = await receiver_stats(session, receiver.base, detail=True)

    measured = {f"lat-{run}-{i}" for i in range(warmup_count, total)}
    arrivals = {k: v for k, v in stats["latency"].items() if k in measured}
    e2e_ms = sorted((arrival - sent) * 1000 for sent, arrival in arrivals.values())
    ack_ms = sorted(acked[k] * 1000 for k in measured if k in acked)
    after_ack_ms = sorted(
        (arrival - sent - acked[k]) * 1000 for k, (sent, arrival) in arrivals.items() if k in acked
    )
    send_lag.sort()
    # when a tail is long, the times of its events say what to look for in other records
    slowest = sorted(
        (
            {
                "sent_at_utc": datetime.fromtimestamp(sent, UTC).strftime("%H:%M:%S.%f")[:-3],
                "ingest_to_arrival_ms": round((arrival - sent) * 1000, 1),
                "ack_ms": round(acked[k] * 1000, 1) if k in acked else None,
            }
            for k, (sent, arrival) in arrivals.items()
        ),
        key=lambda event: -event["ingest_to_arrival_ms"],
    )[:SLOWEST_KEPT]

    def summary(values: list[float]) -> dict[str, float | None]:
        return {
            f"p{q}_ms": (round(v, 2) if (v := percentile(values, q)) is not None else None)
            for q in (50, 95, 99)
        } | {"max_ms": round(values[-1], 2) if values else None}

    assert before is not None
    return {
        "rate_per_s": args.rate,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "sent": len(measured),
        "acked": len(ack_ms),
        "arrived": len(e2e_ms),
        "errors": errors[:20],
        "error_count": len(errors),
        "ingest_to_arrival": summary(e2e_ms),
        "ingest_ack": summary(ack_ms),
        "ack_to_arrival": summary(after_ack_ms),
        "send_lag_p99_ms": round((percentile(send_lag, 99) or 0) * 1000, 2),
        "slowest": slowest,
        "cpu": meter.diff(before, after),
        "postgres_activity": activity,
    }
