"""Fixtures: one migrated database per test session, real HTTP receivers, real dispatchers."""

import asyncio
import contextlib
import os
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from tests.support import (
    LOCAL_SERVER,
    Receiver,
    Tenant,
    bootstrap_tenant,
    make_settings,
    new_database,
)
from voicehooks.api.app import create_app
from voicehooks.config import Settings
from voicehooks.db.migrate import upgrade
from voicehooks.db.urls import libpq_url
from voicehooks.dispatch.worker import Dispatcher
from voicehooks.observability.metrics import counters

# No foreign key reaches into history (partitioned by day): it is emptied by name.
TABLES = (
    "organizations",
    "events",
    "event_keys",
    "deliveries",
    "attempts",
    "delivery_queue",
    "metric_counters",
)


def _local_server_answers() -> bool:
    with contextlib.closing(socket.socket()) as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", 5432)) == 0


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A PostgreSQL server: the one named, the local one, or an embedded one."""
    named = os.environ.get("VOICEHOOKS_TEST_DATABASE_URL")
    if named:
        yield named
    elif _local_server_answers():
        yield LOCAL_SERVER
    else:
        from voicehooks.db.embedded import embedded_postgres

        with tempfile.TemporaryDirectory() as data_dir, embedded_postgres(Path(data_dir)) as url:
            yield url


@pytest.fixture(scope="session")
async def database_url(server_url: str) -> AsyncIterator[str]:
    """A fresh database for this session, built by the Alembic migrations."""
    async with new_database(server_url, "voicehooks_test") as url:
        await upgrade(url)
        yield url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection for assertions; every table is emptied after the test."""
    connection = await asyncpg.connect(libpq_url(database_url))
    try:
        yield connection
    finally:
        # A service the test started may still be recording its last attempts: its locks
        # and the TRUNCATE's can meet in opposite orders, and Postgres then aborts one of the
        # two. The service retries its batch; so does this.
        for attempt in range(5):
            try:
                await connection.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
                break
            except asyncpg.DeadlockDetectedError:
                if attempt == 4:
                    raise
        await connection.close()
        counters.discard()


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    """Override in a test module (or with indirect parametrization) to change settings."""
    return {}


@pytest.fixture
def settings(database_url: str, settings_overrides: dict[str, object]) -> Settings:
    return make_settings(database_url, **settings_overrides)


@pytest.fixture
async def app(settings: Settings, database_url: str) -> AsyncIterator[FastAPI]:
    """The API application, served in-process to `client`."""
    application = create_app(settings, database_url)
    yield application
    await application.state.engine.dispose()


@pytest.fixture
async def client(app: FastAPI, db: asyncpg.Connection) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://voicehooks.test") as http:
        yield http


@pytest.fixture
async def tenant(database_url: str, db: asyncpg.Connection) -> Tenant:
    return await bootstrap_tenant(database_url, "acme", "main")


@pytest.fixture
async def other_tenant(database_url: str, db: asyncpg.Connection) -> Tenant:
    return await bootstrap_tenant(database_url, "globex", "main")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver.running() as running:
        yield running


@pytest.fixture
async def dispatcher(
    settings: Settings, database_url: str, db: asyncpg.Connection
) -> AsyncIterator[Dispatcher]:
    """A dispatcher running in this test's event loop; stopped (gracefully) after the test."""
    running = Dispatcher(settings, database_url)
    task = asyncio.create_task(running.run())
    yield running
    running.stop()
    await asyncio.wait_for(task, timeout=30)
