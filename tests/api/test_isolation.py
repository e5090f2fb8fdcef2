"""Isolation (SPEC §4): a slow receiver holds back only itself; in-flight work is bounded."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from tests.delivery_helpers import ingest_batch, running_dispatcher
from tests.support import call_event, create_subscription, serve, wait_until


class CountingServer:
    """A receiver on one loopback address that answers after `delay` and counts concurrency."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.arrived = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.release = asyncio.Event()

    async def handle(self, _: web.Request) -> web.Response:
        self.arrived += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), self.delay)
            return web.Response(text="ok")
        finally:
            self.in_flight -= 1


@contextlib.asynccontextmanager
async def serving(host: str, delay: float) -> AsyncIterator[tuple[CountingServer, str]]:
    server = CountingServer(delay)
    app = web.Application()
    app.router.add_post("/hook", server.handle)
    runner, port = await serve(app, host)
    try:
        yield server, f"http://{host}:{port}/hook"
    finally:
        server.release.set()
        await runner.cleanup()


async def _subscribe_and_ingest(client, tenant, url: str, event: str, calls: str, n: int) -> None:
    """A subscription of `event` to `url`, then `n` events of it for distinct calls."""
    await create_subscription(client, tenant, url=url, event=event)
    await ingest_batch(
        client,
        [call_event(tenant.workspace_id, call_id=f"{calls}-{i}", event=event) for i in range(n)],
    )


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"delivery_timeout": 8.0}


async def test_a_slow_host_does_not_hold_back_another_host(client, tenant, database_url, db):
    async with (
        serving("127.0.0.1", delay=6.0) as (slow, slow_url),
        serving("127.0.0.2", delay=0.0) as (fast, fast_url),
    ):
        await _subscribe_and_ingest(client, tenant, slow_url, "voice.inbound", "slow", 20)
        async with running_dispatcher(
            database_url, max_in_flight=10, max_in_flight_per_host=3, delivery_timeout=8.0
        ):
            # The slow host takes its three places and keeps them.
            await wait_until(lambda: slow.in_flight == 3, timeout=5)
            await _subscribe_and_ingest(client, tenant, fast_url, "voice.outbound", "fast", 30)
            # Every fast delivery arrives while the slow host is still busy with its first three.
            await wait_until(lambda: fast.arrived == 30, timeout=4)
            assert slow.arrived == 3
            assert slow.most_in_flight == 3
            assert fast.most_in_flight <= 3
            slow.release.set()
            await wait_until(lambda: slow.arrived == 20, timeout=15)


async def test_requests_in_flight_never_exceed_the_global_bound(client, tenant, database_url, db):
    async with serving("127.0.0.1", delay=0.3) as (receiver, url):
        for event in ("voice.inbound", "voice.outbound"):
            await create_subscription(client, tenant, url=url, event=event)
        await ingest_batch(
            client,
            [
                call_event(tenant.workspace_id, call_id=f"call-{n}", event=event)
                for n in range(15)
                for event in ("voice.inbound", "voice.outbound")
            ],
        )
        async with running_dispatcher(database_url, max_in_flight=4, max_in_flight_per_host=64):
            await wait_until(lambda: receiver.arrived == 30, timeout=15)
        assert receiver.most_in_flight == 4


async def test_hosts_share_the_global_bound_in_turns(client, tenant, database_url, db):
    async with (
        serving("127.0.0.1", delay=3.0) as (slow, slow_url),
        serving("127.0.0.2", delay=0.0) as (fast, fast_url),
    ):
        await _subscribe_and_ingest(client, tenant, slow_url, "voice.inbound", "slow", 6)
        async with running_dispatcher(
            database_url, max_in_flight=2, max_in_flight_per_host=2, delivery_timeout=8.0
        ):
            # The slow host takes both places of the global bound.
            await wait_until(lambda: slow.in_flight == 2, timeout=5)
            await _subscribe_and_ingest(client, tenant, fast_url, "voice.outbound", "fast", 4)
            # When the slow host's first requests end, a place goes to the fast host: it does
            # not wait behind the slow host's whole backlog (6 requests, three rounds of 3 s).
            await wait_until(lambda: fast.arrived >= 1, timeout=5)
            assert slow.arrived <= 4
            slow.release.set()
            await wait_until(lambda: slow.arrived == 6 and fast.arrived == 4, timeout=15)
            assert slow.most_in_flight == 2
            assert fast.most_in_flight <= 2


async def test_a_backlog_beyond_what_a_worker_holds_drains_without_waiting_for_the_poll(
    client, tenant, database_url, db
):
    # The worker holds at most 4 x 2 deliveries of the host; the other 192 are claimed as room
    # frees up. With a poll interval far beyond the bound, only wake-ups on freed room can
    # drain the backlog in time.
    async with serving("127.0.0.1", delay=0.0) as (receiver, url):
        await create_subscription(client, tenant, url=url)
        await ingest_batch(
            client, [call_event(tenant.workspace_id, call_id=f"call-{n}") for n in range(200)]
        )
        async with running_dispatcher(
            database_url, max_in_flight=8, max_in_flight_per_host=2, poll_interval=60.0
        ):
            await wait_until(lambda: receiver.arrived == 200, timeout=20)
        assert receiver.most_in_flight <= 2
