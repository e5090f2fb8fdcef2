"""SPEC §5: the `voicehooks` command, run as real processes."""

import asyncio
import contextlib
import json
import os
import signal
import socket
import uuid

import httpx
import psutil
import pytest

from tests.operations_helpers import (
    run_voicehooks,
    service_environment,
    spawn_voicehooks,
    wait_for_readyz,
)
from tests.subscriptions_helpers import assert_problem
from tests.support import SEED_BODY, Tenant, wait_until

COMMAND_TIMEOUT = 90.0


def _environment(**values: str) -> dict[str, str]:
    """This environment without any VOICEHOOKS_* setting, plus the given ones."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("VOICEHOOKS_")}
    env.update(values)
    return env


async def _run(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    return await run_voicehooks(env, *args, timeout=COMMAND_TIMEOUT)


def _only_json_object(stdout: str) -> dict[str, str]:
    """stdout holds one JSON object and nothing else."""
    assert stdout.endswith("\n") and stdout.count("\n") == 1, stdout
    printed = json.loads(stdout)
    assert set(printed) == {"organizationId", "workspaceId", "accessKey"}
    uuid.UUID(printed["organizationId"])
    uuid.UUID(printed["workspaceId"])
    assert len(printed["accessKey"]) >= 32
    return printed


def _tenant(printed: dict[str, str]) -> Tenant:
    return Tenant(
        uuid.UUID(printed["organizationId"]),
        uuid.UUID(printed["workspaceId"]),
        printed["accessKey"],
    )


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_bootstrap_prints_one_json_object_and_reuses_the_tenancy(client, database_url, db):
    env = _environment(VOICEHOOKS_DATABASE_URL=database_url)
    args = ("bootstrap", "--organization", "cli-org", "--workspace", "cli-ws")
    code, stdout, stderr = await _run(*args, env=env)
    assert code == 0, stderr
    first = _only_json_object(stdout)
    assert first["accessKey"] not in stderr

    code, stdout, stderr = await _run(*args, env=env)
    assert code == 0, stderr
    second = _only_json_object(stdout)
    assert second["organizationId"] == first["organizationId"]
    assert second["workspaceId"] == first["workspaceId"]
    assert second["accessKey"] != first["accessKey"]

    names = await db.fetch(
        "SELECT o.name AS organization, w.name AS workspace "
        "FROM organizations o JOIN workspaces w ON w.organization_id = o.id"
    )
    assert [(row["organization"], row["workspace"]) for row in names] == [("cli-org", "cli-ws")]
    # Both keys open the workspace.
    for printed in (first, second):
        tenant = _tenant(printed)
        response = await client.get(tenant.subscriptions, headers=tenant.headers)
        assert response.status_code == 200, response.text


async def test_bootstrap_names_default_and_the_asyncpg_url_form_works(client, database_url, db):
    asyncpg_form = database_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    code, stdout, stderr = await _run(
        "bootstrap", env=_environment(VOICEHOOKS_DATABASE_URL=asyncpg_form)
    )
    assert code == 0, stderr
    tenant = _tenant(_only_json_object(stdout))
    row = await db.fetchrow(
        "SELECT o.name AS organization, w.name AS workspace FROM workspaces w "
        "JOIN organizations o ON o.id = w.organization_id WHERE w.id = $1",
        tenant.workspace_id,
    )
    assert (row["organization"], row["workspace"]) == ("default", "default")
    response = await client.post(tenant.subscriptions, json=SEED_BODY, headers=tenant.headers)
    assert response.status_code == 201, response.text


async def test_bootstrap_refuses_a_database_url_that_is_not_postgres():
    code, stdout, _ = await _run(
        "bootstrap", env=_environment(VOICEHOOKS_DATABASE_URL="mysql://root@127.0.0.1/x")
    )
    assert code != 0
    assert stdout == ""


async def test_serve_with_an_embedded_postgres(tmp_path):
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = _environment(VOICEHOOKS_DATA_DIR=str(tmp_path / "data"))
    stdout_path, stderr_path = tmp_path / "serve.out", tmp_path / "serve.err"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        serve = await spawn_voicehooks(
            env, "serve", "--host", "127.0.0.1", "--port", str(port), stdout=stdout, stderr=stderr
        )
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5.0) as http:

            async def ready() -> bool:
                if serve.returncode is not None:
                    raise AssertionError(f"serve exited: {stderr_path.read_text()}")
                try:
                    return (await http.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(ready, timeout=COMMAND_TIMEOUT, interval=0.2)
            assert (await http.get("/healthz")).json() == {"status": "ok"}

            # A second process finds the same embedded database through the data directory.
            code, out, err = await _run("bootstrap", env=env)
            assert code == 0, err
            printed = _only_json_object(out)
            tenant = _tenant(printed)

            created = await http.post(tenant.subscriptions, json=SEED_BODY, headers=tenant.headers)
            assert created.status_code == 201, created.text
            assert created.json()["signingKey"] == "********"
            listed = await http.get(tenant.subscriptions, headers=tenant.headers)
            assert [item["id"] for item in listed.json()["results"]] == [created.json()["id"]]
            assert_problem(await http.get(tenant.subscriptions), 401)
            # The server outlived the bootstrap process that shared its database.
            assert (await http.get("/readyz")).status_code == 200
    finally:
        if serve.returncode is None:
            serve.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(serve.wait(), 30)
        except TimeoutError:
            serve.kill()
            await serve.wait()
            raise AssertionError("serve did not stop on SIGTERM") from None
    assert code == 0, stderr_path.read_text()

    logs = stdout_path.read_text() + stderr_path.read_text()
    assert "webhook-subscriptions" in logs  # requests are logged...
    assert printed["accessKey"] not in logs  # ...but never the access key
    assert SEED_BODY["signingKey"] not in logs  # ...nor the signing key


async def test_api_processes_share_the_port_and_stop_together(database_url, tmp_path):
    """`voicehooks api --processes 2`: connections opened together (as a sender's keep-alive
    pool opens them) are spread over both processes, and SIGTERM to the first stops both."""
    port = _free_port()
    env = service_environment(database_url)
    log_path = tmp_path / "api.log"
    with log_path.open("wb") as log:
        first = await spawn_voicehooks(
            env, "api", "--port", str(port), "--processes", "2", stdout=log, stderr=log
        )
    try:
        leader = psutil.Process(first.pid)
        (sibling,) = await wait_until(lambda: leader.children(), timeout=COMMAND_TIMEOUT)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            await wait_for_readyz(http, timeout=COMMAND_TIMEOUT)
        clients = [
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) for _ in range(16)
        ]
        try:
            answers = await asyncio.gather(*(client.get("/healthz") for client in clients))
            assert all(answer.json() == {"status": "ok"} for answer in answers)

            def served_by(process: psutil.Process) -> int:
                return sum(
                    c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
                    for c in process.net_connections()
                )

            # Each kept-alive connection stays with the process that accepted it. (All 16
            # on one process by chance: 2 in 65,536.)
            assert served_by(leader) + served_by(sibling) == 16
            assert served_by(leader) > 0 and served_by(sibling) > 0
        finally:
            for client in clients:
                await client.aclose()
        first.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(first.wait(), 30) == 0
        await wait_until(lambda: _gone(sibling))
        announced = [line for line in log_path.read_text().splitlines() if "listening on" in line]
        assert len(announced) == 1 and "API in 2 processes" in announced[0], announced
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("command", ["api", "worker"])
async def test_siblings_stop_when_the_first_process_is_killed(database_url, tmp_path, command):
    """kill -9 of the first process, which then cannot stop the others: they stop by
    themselves, rather than serve on beside a restarted service."""
    port = _free_port()
    env = service_environment(database_url)
    arguments = ["api", "--port", str(port)] if command == "api" else ["worker"]
    with (tmp_path / "service.log").open("wb") as log:
        first = await spawn_voicehooks(env, *arguments, "--processes", "2", stdout=log, stderr=log)
    sibling = None
    try:
        leader = psutil.Process(first.pid)
        (sibling,) = await wait_until(lambda: leader.children(), timeout=COMMAND_TIMEOUT)
        # Up and running: listening (the API), connected to the database (both).
        await wait_until(
            lambda: any(c.status == psutil.CONN_ESTABLISHED for c in sibling.net_connections()),
            timeout=COMMAND_TIMEOUT,
        )
        first.kill()
        await first.wait()
        await wait_until(lambda: _gone(sibling), timeout=30)
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
        if sibling is not None and not _gone(sibling):
            sibling.kill()
