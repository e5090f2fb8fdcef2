"""Test helpers: tenants, a real HTTP receiver on 127.0.0.1, bounded waiting."""

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

import httpx
from aiohttp import web

from voicehooks.tenancy.service import bootstrap_database

T = TypeVar("T")


@dataclass(frozen=True)
class Tenant:
    organization_id: uuid.UUID
    workspace_id: uuid.UUID
    access_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"AccessKey {self.access_key}"}

    @property
    def subscriptions(self) -> str:
        return (
            f"/organizations/{self.organization_id}/workspaces/{self.workspace_id}"
            "/webhook-subscriptions"
        )

    def subscription(self, subscription_id: object) -> str:
        return f"{self.subscriptions}/{subscription_id}"


@overload
async def wait_until(
    condition: Callable[[], Awaitable[T]], *, timeout: float = ..., interval: float = ...
) -> T: ...


@overload
async def wait_until(
    condition: Callable[[], T], *, timeout: float = ..., interval: float = ...
) -> T: ...


async def wait_until(
    condition: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.02
) -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        import json

        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class Receiver:
    """An HTTP server on 127.0.0.1 that records every request and answers as scripted.

    `script` answers requests in turn (the last reply repeats); `by_path` scripts per path.
    """

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.script: list[Reply] = [Reply()]
        self.by_path: dict[str, list[Reply]] = {}
        self.port = 0
        self._served: dict[str, int] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reply(self, *replies: Reply, path: str | None = None) -> None:
        if path is None:
            self.script = list(replies)
        else:
            self.by_path[path] = list(replies)

    def to(self, path: str) -> list[Received]:
        return [request for request in self.requests if request.path == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(Received(request.path, dict(request.headers), body, time.monotonic()))
        script = self.by_path.get(request.path, self.script)
        served = self._served.get(request.path, 0)
        self._served[request.path] = served + 1
        reply = script[min(served, len(script) - 1)]
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return web.Response(status=reply.status, text=reply.body, headers=reply.headers)

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls) -> AsyncIterator["Receiver"]:
        receiver = cls()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", receiver._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        receiver.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            yield receiver
        finally:
            await runner.cleanup()


SEED_BODY = {
    "service": "channels",
    "event": "voice.inbound",
    "url": "https://example.com/hook",
    "signingKey": "mysecretkey",
    "eventFilters": [
        {"key": "channelId", "value": "b827924e-9789-4c2f-a4d5-b352175354f6"},
        {"key": "status", "value": "completed"},
        {"key": "status", "value": "starting"},
    ],
}


async def create_subscription(
    client: httpx.AsyncClient, tenant: Tenant, **fields: Any
) -> dict[str, Any]:
    body = {"service": "channels", "event": "voice.inbound", "url": "https://example.com/hook"}
    body.update(fields)
    response = await client.post(tenant.subscriptions, json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    return response.json()


def call_event(
    workspace_id: uuid.UUID,
    *,
    call_id: str = "call-1",
    status: str = "ringing",
    channel_id: str = "b827924e-9789-4c2f-a4d5-b352175354f6",
    event: str = "voice.inbound",
    client_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "workspaceId": str(workspace_id),
        "event": event,
        "payload": {
            "id": call_id,
            "channelId": channel_id,
            "status": status,
            "direction": "incoming" if event == "voice.inbound" else "outgoing",
            "from": "+31612345678",
            "to": "+31201234567",
            **extra,
        },
    }
    if client_id is not None:
        item["id"] = client_id
    return item


async def bootstrap_tenant(database_url: str, organization: str, workspace: str) -> Tenant:
    """Find or create an organization and workspace and issue a new access key for them."""
    result = await bootstrap_database(database_url, organization, workspace)
    return Tenant(result.organization_id, result.workspace_id, result.access_key)
