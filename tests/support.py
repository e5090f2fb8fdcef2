"""Test helpers: tenants, a real HTTP receiver on 127.0.0.1, bounded waiting."""

import asyncio
import base64
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

import asyncpg
import httpx
from aiohttp import web
from sqlalchemy.engine import make_url

from voicehooks.config import Settings
from voicehooks.db.urls import libpq_url
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

    async def handle(self, request: web.Request) -> web.StreamResponse:
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
        app.router.add_route("*", "/{tail:.*}", receiver.handle)
        runner, receiver.port = await serve(app)
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


INGEST_TOKEN = "test-ingest-token-0123456789"
# The tests' VOICEHOOKS_ENCRYPTION_KEYS: base64 of 32 fixed bytes.
TEST_ENCRYPTION_KEY = base64.b64encode(b"voicehooks-test-encryption-key!!").decode()
LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextlib.asynccontextmanager
async def new_database(server_url: str, prefix: str) -> AsyncIterator[str]:
    """An empty database on the server, dropped afterwards; yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(libpq_url(server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        admin = await asyncpg.connect(libpq_url(server_url))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def make_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "ingest_token": INGEST_TOKEN,
        "allow_http_targets": True,
        "allowed_target_networks": "127.0.0.0/8",
        "delivery_timeout": 2.0,
        "retry_delays": "0.2,0.2,0.2",
        "poll_interval": 0.1,
        "lease_margin": 3.0,
        "encryption_keys": TEST_ENCRYPTION_KEY,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


async def serve(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int]:
    """Serve an aiohttp app on a socket of its own; returns the runner and the port it got."""
    listening = socket.create_server((host, port))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, listening).start()
    return runner, listening.getsockname()[1]
