"""Helpers shared by the ingestion, matching, delivery, ordering and worker tests."""

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
from aiohttp import web

from tests.support import INGEST_TOKEN, Received, Receiver, Reply, Tenant, make_settings
from voicehooks.dispatch.worker import Dispatcher

INGEST_HEADERS = {"Authorization": f"Bearer {INGEST_TOKEN}"}


async def ingest(client: httpx.AsyncClient, item: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/internal/v1/events", json=item, headers=INGEST_HEADERS)
    assert response.status_code == 202, response.text
    return response.json()


async def ingest_batch(client: httpx.AsyncClient, items: list[dict[str, Any]]) -> list[Any]:
    response = await client.post(
        "/internal/v1/events/batch", json={"events": items}, headers=INGEST_HEADERS
    )
    assert response.status_code == 202, response.text
    results: list[Any] = response.json()["results"]
    return results


async def get_page(
    client: httpx.AsyncClient, tenant: Tenant, subscription_id: str, what: str, **params: Any
) -> dict[str, Any]:
    """One page of `logs` or `deliveries` of a subscription, through the public API."""
    response = await client.get(
        f"{tenant.subscription(subscription_id)}/{what}", params=params, headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def all_pages(
    client: httpx.AsyncClient, tenant: Tenant, subscription_id: str, what: str, **params: Any
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    token = None
    while True:
        query = dict(params, limit=100)
        if token:
            query["pageToken"] = token
        page = await get_page(client, tenant, subscription_id, what, **query)
        results += page["results"]
        token = page.get("nextPageToken")
        if not token:
            return results


async def logs(
    client: httpx.AsyncClient, tenant: Tenant, subscription_id: str, **params: Any
) -> list[dict[str, Any]]:
    return await all_pages(client, tenant, subscription_id, "logs", **params)


async def deliveries(
    client: httpx.AsyncClient, tenant: Tenant, subscription_id: str, **params: Any
) -> list[dict[str, Any]]:
    return await all_pages(client, tenant, subscription_id, "deliveries", **params)


async def count(db: asyncpg.Connection, query: str, *args: Any) -> int:
    value = await db.fetchval(query, *args)
    return int(value)


@contextlib.asynccontextmanager
async def running_dispatcher(database_url: str, **overrides: Any) -> AsyncIterator[Dispatcher]:
    """A dispatcher with its own settings (e.g. other address rules than the API's)."""
    dispatcher = Dispatcher(make_settings(database_url, **overrides), database_url)
    task = asyncio.create_task(dispatcher.run())
    try:
        yield dispatcher
    finally:
        dispatcher.stop()
        await asyncio.wait_for(task, timeout=30)


def closed_port() -> int:
    """A local TCP port nobody listens on (connections to it are refused)."""
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class CallReceiver(Receiver):
    """A receiver that answers per call status: `fail[(call id, status)]` 500s first, then 200
    (`fail[(path, call id, status)]` for one path only).

    Lets a test make one delivery of a call fail while every other one succeeds, whatever
    order the dispatcher happens to send them in.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fail: dict[tuple[str, ...], int] = {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(Received(request.path, dict(request.headers), body, time.monotonic()))
        payload = json.loads(body)["payload"]
        key = (payload["id"], payload["status"])
        if (request.path, *key) in self.fail:
            key = (request.path, *key)
        if self.fail.get(key, 0) > 0:
            self.fail[key] -= 1
            reply = Reply(500, body="not yet")
        else:
            reply = Reply(200)
        return web.Response(status=reply.status, text=reply.body)

    def calls(self) -> list[tuple[str, str]]:
        """(call id, status) of every request, in arrival order."""
        return [(r.json()["payload"]["id"], r.json()["payload"]["status"]) for r in self.requests]
