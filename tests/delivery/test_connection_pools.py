"""Real `voicehooks api` and `voicehooks worker` processes open their database connections at
start and keep them: a burst of work opens none; and an API connection is ready for ingestion's
statements when it opens. (A connection opened under load costs a server process and type
lookups; many opened at once stall every request for hundreds of ms.)"""

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from tests.delivery_helpers import closed_port, ingest_batch
from tests.operations_helpers import (
    INGEST_HEADERS,
    run_command,
    running,
    running_api,
    service_environment,
    wait_for_readyz,
)
from tests.support import INGEST_TOKEN, call_event, create_subscription, new_database, wait_until
from voicehooks.api.app import create_app
from voicehooks.db.engine import API_POOL_SIZE, create_engine, session_driver_connection
from voicehooks.dispatch.worker import POOL_SIZE
from voicehooks.ingestion.repository import IngestionRepository, MatchKey

BURST = 60


def _named(database_url: str, application_name: str) -> str:
    """The database URL with an application name, to find the process's connections."""
    url = make_url(database_url)
    return url.update_query_dict({"application_name": application_name}).render_as_string(
        hide_password=False
    )


async def _backends(db: asyncpg.Connection, application_name: str) -> set[int]:
    rows = await db.fetch(
        "SELECT pid FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = $1",
        application_name,
    )
    return {row["pid"] for row in rows}


async def test_the_api_opens_its_whole_pool_at_start_and_a_burst_of_ingests_opens_none(
    client, db, tenant, receiver, database_url, tmp_path
):
    await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    env = service_environment(
        _named(database_url, "voicehooks-api-under-test"), VOICEHOOKS_INGEST_TOKEN=INGEST_TOKEN
    )
    async with running_api(env, tmp_path / "api.log") as api:
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

        async def pool_and_listener() -> set[int]:
            backends = await _backends(db, "voicehooks-worker-under-test")
            return backends if len(backends) == POOL_SIZE + 1 else set()

        # the pool is whole when the dispatcher starts; the listener connects right after
        at_start = await wait_until(pool_and_listener, timeout=10)

        await ingest_batch(
            client, [call_event(tenant.workspace_id, call_id=f"burst-{n}") for n in range(BURST)]
        )
        await wait_until(lambda: len(receiver.requests) >= BURST, timeout=30)
        assert await _backends(db, "voicehooks-worker-under-test") == at_start


async def test_the_api_starts_while_the_database_is_down_and_says_so_on_readyz(tmp_path):
    unreachable = f"postgresql://postgres@127.0.0.1:{closed_port()}/voicehooks"
    env = service_environment(unreachable, VOICEHOOKS_INGEST_TOKEN=INGEST_TOKEN)
    async with running_api(env, tmp_path / "api.log") as api:
        await wait_for_readyz(api, status=503)
        assert (await api.get("/healthz")).status_code == 200
    assert "database_pool_not_filled" in (tmp_path / "api.log").read_text()


async def _type_lookups(engine: AsyncEngine) -> list[str]:
    """The catalog queries asyncpg runs to look up types while ingestion's statements run."""
    lookups: list[str] = []
    async with async_sessionmaker(engine)() as session:
        connection = await session_driver_connection(session)
        connection.add_query_logger(
            lambda record: lookups.append(record.query) if "typeinfo" in record.query else None
        )
        repository = IngestionRepository(session)
        await repository.candidates([MatchKey(uuid.uuid4(), "voice.inbound", uuid.uuid4())])
        await repository.insert_events([])
        await repository.stored_events([])
    await engine.dispose()
    return lookups


async def test_an_api_connection_runs_ingestion_without_looking_up_types(
    settings, database_url, db
):
    app = create_app(settings, database_url)
    assert await _type_lookups(app.state.engine) == []
    # what every new connection of an engine without hot statements does on its first ingest
    assert await _type_lookups(create_engine(database_url)) != []


@pytest.fixture
async def empty_database(server_url: str) -> AsyncIterator[str]:
    """A database with no schema yet, dropped after the test."""
    async with new_database(server_url, "voicehooks_empty") as url:
        yield url


async def test_the_api_started_before_the_migration_is_ready_once_it_ran(empty_database, tmp_path):
    env = service_environment(empty_database, VOICEHOOKS_INGEST_TOKEN=INGEST_TOKEN)
    async with running_api(env, tmp_path / "api.log") as api:
        await wait_for_readyz(api, status=503)
        await run_command(env, "migrate")
        await wait_for_readyz(api, status=200)
    assert "database_pool_not_filled" in (tmp_path / "api.log").read_text()
