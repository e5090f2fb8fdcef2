"""Real `voicehooks api` and `voicehooks worker` processes open their database connections at
start and keep them: a burst of work opens none. (A connection opened under load costs a server
process and type lookups; many opened at once stall every request for hundreds of ms.)"""

import asyncio

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from tests.conftest import INGEST_TOKEN
from tests.delivery_helpers import closed_port, ingest_batch
from tests.operations_helpers import (
    INGEST_HEADERS,
    free_port,
    running,
    service_environment,
    wait_for_readyz,
)
from tests.support import call_event, create_subscription, wait_until
from voicehooks.db.engine import API_POOL_SIZE
from voicehooks.dispatch.worker import POOL_SIZE

BURST = 60


def _named(database_url: str, application_name: str) -> str:
    """The database URL with an application name, to find the process's connections."""
    url = make_url(database_url)
    return url.update_query_dict({"application_name": application_name}).render_as_string(
        hide_password=False
    )


async def _backends(db: asyncpg.Connection, application_name: str) -> set[int]:
    rows = await db.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1", application_name
    )
    return {row["pid"] for row in rows}


async def test_the_api_opens_its_whole_pool_at_start_and_a_burst_of_ingests_opens_none(
    client, db, tenant, receiver, database_url, tmp_path
):
    await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    env = service_environment(
        _named(database_url, "voicehooks-api-under-test"), VOICEHOOKS_INGEST_TOKEN=INGEST_TOKEN
    )
    port = free_port()
    async with (
        running(env, tmp_path / "api.log", "api", "--port", str(port)),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as api,
    ):
        await wait_for_readyz(api)
        at_start = await _backends(db, "voicehooks-api-under-test")
        assert len(at_start) == API_POOL_SIZE

        answers = await asyncio.gather(
            *(
                api.post(
                    "/internal/v1/events",
                    json=call_event(tenant.workspace_id, call_id=f"burst-{n}"),
                    headers=INGEST_HEADERS,
                )
                for n in range(BURST)
            )
        )
        assert [answer.status_code for answer in answers] == [202] * BURST
        assert await _backends(db, "voicehooks-api-under-test") == at_start


async def test_the_worker_opens_its_pool_at_start_and_a_burst_of_deliveries_opens_none(
    client, db, tenant, receiver, database_url, tmp_path
):
    await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    env = service_environment(
        _named(database_url, "voicehooks-worker-under-test"), VOICEHOOKS_WORKER_PROCESSES="1"
    )
    log = tmp_path / "worker.log"
    async with running(env, log, "worker"):
        await wait_until(lambda: "dispatcher_started" in log.read_text(), timeout=30, interval=0.05)
        at_start = await _backends(db, "voicehooks-worker-under-test")
        # the pool, and the connection that listens for new deliveries
        assert len(at_start) == POOL_SIZE + 1

        await ingest_batch(
            client, [call_event(tenant.workspace_id, call_id=f"burst-{n}") for n in range(BURST)]
        )
        await wait_until(lambda: len(receiver.requests) >= BURST, timeout=30)
        assert await _backends(db, "voicehooks-worker-under-test") == at_start


async def test_the_api_starts_while_the_database_is_down_and_says_so_on_readyz(tmp_path):
    unreachable = f"postgresql://postgres@127.0.0.1:{closed_port()}/voicehooks"
    env = service_environment(unreachable, VOICEHOOKS_INGEST_TOKEN=INGEST_TOKEN)
    port = free_port()
    async with (
        running(env, tmp_path / "api.log", "api", "--port", str(port)),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as api,
    ):
        await wait_for_readyz(api, status=503)
        assert (await api.get("/healthz")).status_code == 200
    assert "database_pool_not_filled" in (tmp_path / "api.log").read_text()
