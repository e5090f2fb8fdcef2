"""SPEC §2/§4: deleting or deactivating a subscription stops its pending deliveries. Requests
already on the wire may finish; nothing new is sent for it once the 204/200 is answered, even
what a worker already holds in memory."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from tests.delivery_helpers import ingest_batch
from tests.support import call_event, create_subscription, wait_until

TIMEOUT = 1.0
# Requests sent just before the answer may reach the host just after it.
ON_THE_WIRE = 0.2


class SilentHost:
    """Accepts connections, reads the requests and never answers: a host that hangs."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            if await reader.read(65536):
                self.arrivals.append(time.monotonic())
            await reader.read()  # until the sender gives up and closes
        writer.close()

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls) -> AsyncIterator["tuple[SilentHost, int]"]:
        host = cls()
        server = await asyncio.start_server(host.handle, "127.0.0.1", 0)
        try:
            yield host, server.sockets[0].getsockname()[1]
        finally:
            server.close()


@pytest.mark.parametrize(
    "settings_overrides",
    [{"delivery_timeout": TIMEOUT, "max_in_flight_per_host": 4, "retry_delays": "30"}],
)
@pytest.mark.parametrize("stop", ["delete", "deactivate"])
async def test_nothing_new_is_sent_for_a_subscription_once_it_is_stopped(
    client, tenant, db, dispatcher, stop
):
    async with SilentHost.running() as (host, port):
        subscription = await create_subscription(client, tenant, url=f"http://127.0.0.1:{port}/h")
        await ingest_batch(
            client, [call_event(tenant.workspace_id, call_id=f"call-{i}") for i in range(40)]
        )
        # The worker holds up to 4 × 4 of them, 4 on the wire.
        await wait_until(lambda: len(host.arrivals) >= 4, timeout=10)
        path = f"{tenant.subscriptions}/{subscription['id']}"
        if stop == "delete":
            response = await client.delete(path, headers=tenant.headers)
            assert response.status_code == 204
        else:
            response = await client.patch(path, json={"status": "inactive"}, headers=tenant.headers)
            assert response.status_code == 200
        answered = time.monotonic()
        # The requests on the wire time out after TIMEOUT; held ones would follow right then.
        await asyncio.sleep(3 * TIMEOUT)
        late = [at - answered for at in host.arrivals if at > answered + ON_THE_WIRE]
        assert late == [], f"{len(late)} requests started after the {response.status_code}"
