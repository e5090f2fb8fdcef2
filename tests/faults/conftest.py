"""Fixtures of the fault-injection suite: a cuttable proxy to the test database, service
processes that are always stopped afterwards, a receiver that can go down."""

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.harness import DownableReceiver, Service, TcpProxy, fault_environment

StartService = Callable[..., Awaitable[Service]]


@pytest.fixture
def proxy(database_url: str) -> Iterator[TcpProxy]:
    """A TCP proxy to the test database (`proxy.url_for(database_url)`), cut by the test."""
    running = TcpProxy.to_database(database_url).start()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[StartService]:
    """`await services(command, database_url, name=..., **settings)` starts a voicehooks
    process and waits until it is ready; every one is stopped after the test."""
    started: list[Service] = []

    async def start(
        command: str, database_url: str, *, name: str | None = None, **settings: str
    ) -> Service:
        service = Service(
            command,
            fault_environment(database_url, **settings),
            tmp_path,
            name or f"{command}-{len(started)}",
        )
        started.append(service)
        return await service.start()

    yield start
    for service in started:
        await service.stop()


@pytest.fixture
async def downable_receiver() -> AsyncIterator[DownableReceiver]:
    async with DownableReceiver.serving() as receiver:
        yield receiver
