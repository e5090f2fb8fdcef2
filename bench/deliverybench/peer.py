#!/usr/bin/env python3
"""The peer voicehooks is compared with: what an engineer would build in a day with pgqueuer.

`peer.py api`: an aiohttp server taking the same ingestion batches as voicehooks
(`POST /internal/v1/events/batch`, Bearer token) and enqueuing one pgqueuer job per event
(its delivery body, rendered as voicehooks renders it) in one batch insert.
`peer.py worker`: a pgqueuer QueueManager whose entrypoint POSTs a job's body with aiohttp to
the one target URL, signed as voicehooks signs (both HMAC headers), at most
PEER_CONCURRENCY requests in flight per process. No retries, no per-call order and no record
of attempts: the plain version of the job.

Settings come from the environment: PEER_DSN, PEER_TOKEN, PEER_PORT, PEER_TARGET,
PEER_SIGNING_KEY, PEER_CONCURRENCY.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from datetime import timedelta

import aiohttp
import asyncpg
import uvloop
from aiohttp import web
from pgqueuer import AsyncpgDriver, AsyncpgPoolDriver, Job, Queries, QueueManager

from voicehooks.dispatch.signing import signature_headers

ENTRYPOINT = "deliver"


async def serve_api() -> None:
    token = os.environ["PEER_TOKEN"]
    pool = await asyncpg.create_pool(os.environ["PEER_DSN"], min_size=4, max_size=4)
    queries = Queries(AsyncpgPoolDriver(pool))

    async def batch(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {token}":
            return web.json_response({"title": "Unauthorized"}, status=401)
        events = (await request.json())["events"]
        bodies: list[bytes | None] = []
        for event in events:
            body = json.dumps(
                {"service": "channels", "event": event["event"], "payload": event["payload"]},
                ensure_ascii=False,
                separators=(",", ":"),
            ).encode()
            bodies.append(str(uuid.uuid4()).encode() + b"\n" + body)  # delivery id, body
        ids = await queries.enqueue([ENTRYPOINT] * len(bodies), bodies, [0] * len(bodies))
        return web.json_response(
            {"results": [{"id": str(i), "deliveries": 1, "duplicate": False} for i in ids]},
            status=202,
        )

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=10 * 1024 * 1024)
    app.router.add_post("/internal/v1/events/batch", batch)
    app.router.add_get("/readyz", ready)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(os.environ["PEER_PORT"])).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()
    await pool.close()


async def serve_worker() -> None:
    target = os.environ["PEER_TARGET"]
    key = os.environ["PEER_SIGNING_KEY"]
    concurrency = int(os.environ["PEER_CONCURRENCY"])
    connection = await asyncpg.connect(os.environ["PEER_DSN"])
    manager = QueueManager(Queries(AsyncpgDriver(connection)))
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10))

    @manager.entrypoint(ENTRYPOINT)
    async def deliver(job: Job) -> None:
        assert job.payload is not None
        delivery_id, _, body = job.payload.partition(b"\n")
        headers = signature_headers(
            delivery_id=delivery_id.decode(),
            timestamp=int(time.time()),
            url=target,
            body=body,
            signing_key=key,
        )
        headers["content-type"] = "application/json"
        headers["user-agent"] = "pgqueuer-peer/bench"
        async with session.post(target, data=body, headers=headers) as response:
            await response.read()
            response.raise_for_status()

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, manager.shutdown.set)
    print("peer_worker_started", flush=True)
    # pgqueuer wants the cap at least twice the batch it fetches.
    await manager.run(
        dequeue_timeout=timedelta(seconds=5),
        batch_size=max(1, concurrency // 2),
        max_concurrent_tasks=max(2, concurrency),
    )
    await session.close()


def main() -> None:
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role not in ("api", "worker", "install"):
        sys.exit("usage: peer.py api|worker|install")
    # uvloop, as voicehooks runs on it: the comparison is of the designs, not the loops.
    if role == "install":
        uvloop.run(install())
    else:
        uvloop.run(serve_api() if role == "api" else serve_worker())


async def install() -> None:
    connection = await asyncpg.connect(os.environ["PEER_DSN"])
    try:
        await Queries(AsyncpgDriver(connection)).install()
    finally:
        await connection.close()


if __name__ == "__main__":
    main()
