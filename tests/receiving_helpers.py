"""Helpers of the receiving side's tests: a real `voicehooks serve`, `voicehooks listen`
processes, and the public and ingestion APIs of that service."""

import asyncio
import contextlib
import json
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from tests.operations_helpers import (
    free_port,
    running,
    service_environment,
    spawn_voicehooks,
    wait_for_readyz,
)
from tests.support import INGEST_TOKEN, Tenant, wait_until


def tool_environment(**extra: str) -> dict[str, str]:
    """The environment of `listen` and `trigger`: no database, the tests' ingest token."""
    env = service_environment("unused", **{"VOICEHOOKS_INGEST_TOKEN": INGEST_TOKEN, **extra})
    del env["VOICEHOOKS_DATABASE_URL"]
    return env


@contextlib.asynccontextmanager
async def serving(database_url: str, log_path: Path) -> AsyncIterator[str]:
    """`voicehooks serve` on a free port, ready; yields its base URL."""
    port = free_port()
    env = service_environment(database_url, VOICEHOOKS_INGEST_TOKEN=INGEST_TOKEN)
    base = f"http://127.0.0.1:{port}"
    async with (
        running(env, log_path, "serve", "--port", str(port)),
        httpx.AsyncClient(base_url=base, timeout=30) as http,
    ):
        await wait_for_readyz(http, timeout=60)
        yield base


async def subscribe(
    api: httpx.AsyncClient, tenant: Tenant, url: str, signing_key: str, **fields: Any
) -> dict[str, Any]:
    body = {"service": "channels", "event": "voice.inbound", "url": url, "signingKey": signing_key}
    body.update(fields)
    response = await api.post(tenant.subscriptions, json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def report_call(
    api: httpx.AsyncClient,
    tenant: Tenant,
    *statuses: str,
    call_id: str | None = None,
    event: str = "voice.inbound",
) -> str:
    """Ingest the statuses of one call in order; its call id."""
    call_id = call_id or f"call-{uuid.uuid4().hex[:8]}"
    for status in statuses:
        item = {
            "workspaceId": str(tenant.workspace_id),
            "event": event,
            "payload": {
                "id": call_id,
                "channelId": "b827924e-9789-4c2f-a4d5-b352175354f6",
                "status": status,
            },
        }
        response = await api.post(
            "/internal/v1/events", json=item, headers={"Authorization": f"Bearer {INGEST_TOKEN}"}
        )
        assert response.status_code == 202, response.text
    return call_id


async def attempt_logs(
    api: httpx.AsyncClient, tenant: Tenant, subscription_id: str, count: int
) -> list[dict[str, Any]]:
    """The subscription's attempt log once it has `count` entries (newest first)."""

    async def enough() -> list[dict[str, Any]] | None:
        response = await api.get(
            f"{tenant.subscription(subscription_id)}/logs",
            params={"limit": 100},
            headers=tenant.headers,
        )
        results: list[dict[str, Any]] = response.json()["results"]
        return results if len(results) >= count else None

    return await wait_until(enough, timeout=20, interval=0.1)


class Listen:
    """A `voicehooks listen` process on a free port; its stdout and stderr in files."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.port = free_port()
        self.args = args
        self.out = directory / f"listen-{self.port}.out"
        self.err = directory / f"listen-{self.port}.err"
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> "Listen":
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.process = await spawn_voicehooks(
                tool_environment(), "listen", "--port", str(self.port), *self.args,
                stdout=out, stderr=err,
            )  # fmt: skip

        def started() -> bool:
            if self.process is not None and self.process.returncode is not None:
                raise AssertionError(f"listen exited: {self.stderr()}")
            return "voicehooks listen: on" in self.stderr()

        await wait_until(started, timeout=20, interval=0.05)
        return self

    def stderr(self) -> str:
        return self.err.read_text() if self.err.exists() else ""

    def lines(self) -> list[str]:
        return self.out.read_text().splitlines() if self.out.exists() else []

    def reports(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]

    async def wait_for_lines(self, count: int, timeout: float = 20) -> list[str]:
        await wait_until(lambda: len(self.lines()) >= count, timeout=timeout, interval=0.05)
        return self.lines()

    async def wait_for_reports(self, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        await self.wait_for_lines(count, timeout)
        return self.reports()

    async def stop(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        assert self.process.returncode is not None
        return self.process.returncode
