"""Logs of real processes (SPEC §4, §5): JSON lines with ids, and never a secret."""

import contextlib
import json
import uuid
from pathlib import Path

import httpx
import pytest

from tests.operations_helpers import (
    free_port,
    header,
    run_command,
    running,
    service_environment,
    signature_entries,
    standard_verifies,
)
from tests.support import TEST_ENCRYPTION_KEY, Reply, call_event, wait_until


def _log_lines(*paths: Path) -> list[dict]:
    lines = []
    for path in paths:
        for raw in path.read_text().splitlines():
            if raw.strip():
                lines.append(json.loads(raw))  # every line is one JSON object
    return lines


async def _ready(http: httpx.AsyncClient) -> bool:
    try:
        return (await http.get("/readyz")).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.parametrize("layout", ["serve", "api+worker"])
async def test_a_full_flow_logs_ids_and_no_secret(layout, db, database_url, receiver, tmp_path):
    ingest_token = f"ingest-token-{uuid.uuid4().hex}"
    old_key = f"first-signing-key-{uuid.uuid4().hex}"
    new_key = f"second-signing-key-{uuid.uuid4().hex}"
    refused_key = f"refused-signing-key-{uuid.uuid4().hex}"
    wrong_access_key = f"wrong-access-key-{uuid.uuid4().hex}"
    wrong_token = f"wrong-ingest-token-{uuid.uuid4().hex}"
    port = free_port()
    # At DEBUG, where each attempt has its own line: no secret appears at any level.
    env = service_environment(
        database_url, VOICEHOOKS_INGEST_TOKEN=ingest_token, VOICEHOOKS_LOG_LEVEL="DEBUG"
    )

    stdout, bootstrap_log = await run_command(
        env, "bootstrap", "--organization", "logging", "--workspace", "flow"
    )
    tenant = json.loads(stdout)
    access_key = tenant["accessKey"]
    secrets = [
        access_key,
        old_key,
        new_key,
        refused_key,
        wrong_access_key,
        ingest_token,
        wrong_token,
        TEST_ENCRYPTION_KEY,
    ]
    assert not any(secret in bootstrap_log for secret in secrets)

    answered: list[httpx.Response] = []

    async def count(response: httpx.Response) -> None:
        answered.append(response)

    base = (
        f"/organizations/{tenant['organizationId']}/workspaces/{tenant['workspaceId']}"
        "/webhook-subscriptions"
    )
    auth = {"Authorization": f"AccessKey {access_key}"}
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    receiver.reply(Reply(200))

    if layout == "serve":
        processes = [(api_log, ("serve", "--port", str(port)))]
    else:
        processes = [(api_log, ("api", "--port", str(port))), (worker_log, ("worker",))]
    logs = [path for path, _ in processes]

    async with contextlib.AsyncExitStack() as stack:
        for path, args in processes:
            await stack.enter_async_context(running(env, path, *args))
        http = await stack.enter_async_context(
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", event_hooks={"response": [count]}
            )
        )
        await wait_until(lambda: _ready(http), timeout=30, interval=0.2)

        created = await http.post(
            base,
            json={
                "service": "channels",
                "event": "voice.inbound",
                "url": f"{receiver.url}/hook",
                "signingKey": old_key,
            },
            headers=auth,
        )
        assert created.status_code == 201, created.text
        sub_id = created.json()["id"]
        rotated = await http.patch(f"{base}/{sub_id}", json={"signingKey": new_key}, headers=auth)
        assert rotated.status_code == 200, rotated.text
        refused = await http.post(
            base,
            json={
                "service": "channels",
                "event": "voice.nope",
                "url": "x",
                "signingKey": refused_key,
            },
            headers=auth,
        )
        assert refused.status_code == 422
        unauthorized = await http.get(
            base, headers={"Authorization": f"AccessKey {wrong_access_key}"}
        )
        assert unauthorized.status_code == 401
        wrong_ingest = await http.post(
            "/internal/v1/events",
            json=call_event(uuid.UUID(tenant["workspaceId"])),
            headers={"Authorization": f"Bearer {wrong_token}"},
        )
        assert wrong_ingest.status_code == 401
        ingested = await http.post(
            "/internal/v1/events",
            json=call_event(uuid.UUID(tenant["workspaceId"]), call_id="logged-call"),
            headers={"Authorization": f"Bearer {ingest_token}"},
        )
        assert ingested.status_code == 202, ingested.text
        event_id = ingested.json()["id"]

        [received] = await wait_until(lambda: receiver.to("/hook"), timeout=15)
        assert len(signature_entries(received)) == 2
        assert standard_verifies(new_key, received) and standard_verifies(old_key, received)
        delivery_id = header(received, "webhook-id")

        def attempt_logged() -> bool:
            text = "".join(path.read_text() for path in logs if path.exists())
            return '"attempt"' in text and delivery_id in text

        await wait_until(attempt_logged, timeout=10)

    raw = "".join(path.read_text() for path in logs)
    for secret in secrets:
        assert secret not in raw
    lines = _log_lines(*logs)

    requests = [line for line in lines if line.get("event") == "request"]
    assert [(r["method"], r["path"], r["status"]) for r in requests] == [
        (response.request.method, response.request.url.path, response.status_code)
        for response in answered
    ]
    patch_line = next(r for r in requests if r["method"] == "PATCH")
    assert patch_line["workspace_id"] == tenant["workspaceId"]
    assert patch_line["subscription_id"] == sub_id
    assert all(isinstance(r["duration_ms"], int | float) for r in requests)

    # At INFO, one line per recorded batch of attempts; each attempt is in the attempt log.
    [batch] = [line for line in lines if line.get("event") == "attempts_recorded"]
    assert (batch["level"], batch["attempts"], batch["succeeded"]) == ("info", 1, 1)
    attempts = [line for line in lines if line.get("event") == "attempt"]
    assert len(attempts) == len(receiver.requests) == 1
    assert attempts[0]["level"] == "debug"
    [attempt] = attempts
    assert attempt["workspace_id"] == tenant["workspaceId"]
    assert attempt["subscription_id"] == sub_id
    assert attempt["delivery_id"] == delivery_id
    assert attempt["event_id"] == event_id
    assert attempt["attempt"] == 1
    assert attempt["status_code"] == 200
    assert all("timestamp" in line and "level" in line for line in lines)
