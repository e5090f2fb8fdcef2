"""Signing keys encrypted at rest (SPEC §2, §5): what a dump of the database shows, what a
missing or wrong encryption key does, and where the keys come from."""

import base64
import json
import os
import stat
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.delivery_helpers import ingest
from tests.operations_helpers import (
    api_client,
    pg_dump,
    run_voicehooks,
    running,
    service_environment,
    standard_verifies,
)
from tests.subscriptions_helpers import assert_problem
from tests.support import TEST_ENCRYPTION_KEY, call_event, create_subscription, wait_until
from voicehooks.dispatch.keys import UNDECRYPTABLE_ERROR
from voicehooks.encryption import KeyRing
from voicehooks.encryption_keys import KEY_FILE_NAME

# A key the tests' subscriptions were not encrypted with.
OTHER_ENCRYPTION_KEY = base64.b64encode(b"another-encryption-key-32-bytes!").decode()
NEEDS_KEYS = ["serve", "api", "worker", "migrate", "rotate-encryption-key"]


def _without_voicehooks_settings(**values: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("VOICEHOOKS_")}
    env.update(values)
    return env


async def _attempt_errors(db, subscription_id: str) -> list[str | None]:
    rows = await db.fetch(
        "SELECT error FROM attempts WHERE subscription_id = $1 ORDER BY created_at",
        uuid.UUID(subscription_id),
    )
    return [row["error"] for row in rows]


async def test_a_dump_of_the_database_holds_no_signing_key_nor_the_encryption_key(
    client, tenant, receiver, dispatcher, database_url
):
    supplied = f"supplied-signing-key-{uuid.uuid4().hex}"
    replaced = f"replaced-signing-key-{uuid.uuid4().hex}"
    replacement = f"replacement-signing-key-{uuid.uuid4().hex}"
    await create_subscription(client, tenant, url=f"{receiver.url}/supplied", signingKey=supplied)
    generated = (await create_subscription(client, tenant, url=f"{receiver.url}/generated"))[
        "signingKey"
    ]
    rotated = await create_subscription(
        client, tenant, url=f"{receiver.url}/rotated", signingKey=replaced
    )
    patched = await client.patch(
        tenant.subscription(rotated["id"]), json={"signingKey": replacement}, headers=tenant.headers
    )
    assert patched.status_code == 200, patched.text
    # The replaced key is in its overlap: it still signs, so the service still holds it.
    await ingest(client, call_event(tenant.workspace_id))
    [received] = await wait_until(lambda: receiver.to("/rotated"))
    assert standard_verifies(replaced, received) and standard_verifies(replacement, received)
    await wait_until(lambda: receiver.to("/supplied") and receiver.to("/generated"))

    dump = await pg_dump(database_url)

    assert rotated["id"] in dump and "v1." in dump  # the rows are in the dump, encrypted
    raw_encryption_key = base64.b64decode(TEST_ENCRYPTION_KEY)
    leaks = [supplied, generated, replaced, replacement]
    leaks += [base64.b64encode(key.encode()).decode() for key in leaks]
    leaks += [TEST_ENCRYPTION_KEY, raw_encryption_key.hex(), raw_encryption_key.decode()]
    for secret in leaks:
        assert secret not in dump


async def test_a_worker_without_the_right_key_sends_nothing_and_says_why_once(
    client, tenant, receiver, database_url, db, tmp_path
):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook")
    env = service_environment(database_url, VOICEHOOKS_ENCRYPTION_KEYS=OTHER_ENCRYPTION_KEY)
    log = tmp_path / "worker.log"
    calls = ["call-a", "call-b", "call-c"]
    async with running(env, log, "worker"):
        for call in calls:
            await ingest(client, call_event(tenant.workspace_id, call_id=call))

        async def all_failed() -> bool:
            states = await db.fetch(
                "SELECT state FROM deliveries WHERE subscription_id = $1", uuid.UUID(sub["id"])
            )
            return len(states) == 3 and all(row["state"] == "failed" for row in states)

        await wait_until(all_failed, timeout=20)
        errors = await _attempt_errors(db, sub["id"])
        # Every attempt of the schedule (4 each) failed with the reason; the worker lived on.
        assert errors == [UNDECRYPTABLE_ERROR] * 12
    assert receiver.requests == []  # no request with a signature nobody could verify
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    reports = [line for line in lines if line.get("event") == "signing_key_undecryptable"]
    assert len(reports) == 1
    assert reports[0]["subscription_id"] == sub["id"]
    assert reports[0]["level"] == "error"
    assert "not configured" in reports[0]["reason"]
    assert OTHER_ENCRYPTION_KEY not in log.read_text()
    assert not [line for line in lines if "Traceback" in json.dumps(line)]


async def test_a_key_copied_onto_another_subscription_does_not_sign_for_it(
    client, tenant, receiver, dispatcher, db
):
    """The ciphertext is bound to its row: pasting one subscription's key into another's row
    (a database-level mix-up or tampering) gives a clear failed attempt, not a signature."""
    first = await create_subscription(client, tenant, url=f"{receiver.url}/first")
    second = await create_subscription(
        client,
        tenant,
        url=f"{receiver.url}/second",
        eventFilters=[{"key": "status", "value": "completed"}],
    )
    await db.execute(
        "UPDATE subscriptions SET signing_key = (SELECT signing_key FROM subscriptions"
        " WHERE id = $1) WHERE id = $2",
        uuid.UUID(first["id"]),
        uuid.UUID(second["id"]),
    )
    await ingest(client, call_event(tenant.workspace_id, status="completed"))

    await wait_until(lambda: receiver.to("/first"))
    errors = await wait_until(lambda: _attempt_errors(db, second["id"]))
    assert errors[0] == UNDECRYPTABLE_ERROR
    assert receiver.to("/second") == []


async def test_the_api_with_the_wrong_key_reads_but_refuses_to_rotate(
    client, tenant, database_url, db
):
    key = "a-signing-key-of-my-own-1234"
    sub = await create_subscription(client, tenant, signingKey=key)
    before = await db.fetchrow("SELECT * FROM subscriptions WHERE id = $1", uuid.UUID(sub["id"]))

    async with api_client(database_url, encryption_keys=OTHER_ENCRYPTION_KEY) as other:
        # Reading needs no decryption: the masked form comes from the stored hint.
        got = await other.get(tenant.subscription(sub["id"]), headers=tenant.headers)
        assert got.status_code == 200 and got.json()["signingKey"] == "********1234"
        refused = await other.patch(
            tenant.subscription(sub["id"]),
            json={"signingKey": "a-brand-new-key-0000", "template": "t"},
            headers=tenant.headers,
        )
        problem = assert_problem(refused, 503)
        assert "cannot be decrypted" in problem["detail"]

    after = await db.fetchrow("SELECT * FROM subscriptions WHERE id = $1", uuid.UUID(sub["id"]))
    assert dict(after) == dict(before)  # the refused PATCH changed nothing, not even template


@pytest.mark.parametrize("command", NEEDS_KEYS)
async def test_with_a_database_url_and_no_key_a_command_refuses_in_one_line(command, database_url):
    code, stdout, stderr = await run_voicehooks(
        _without_voicehooks_settings(VOICEHOOKS_DATABASE_URL=database_url), command
    )
    assert code != 0
    assert stdout == ""
    assert stderr.count("\n") == 1, stderr
    assert "VOICEHOOKS_ENCRYPTION_KEYS is not set" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    "malformed",
    [
        pytest.param("not base64 at all!", id="not-base64"),
        pytest.param(base64.b64encode(b"sixteen byte key").decode(), id="16-bytes"),
        pytest.param(f"{TEST_ENCRYPTION_KEY},Zm9v", id="second-too-short"),
        pytest.param(" , ", id="empty"),
    ],
)
async def test_a_malformed_key_is_refused_in_one_line_without_echoing_it(malformed, database_url):
    env = _without_voicehooks_settings(
        VOICEHOOKS_DATABASE_URL=database_url, VOICEHOOKS_ENCRYPTION_KEYS=malformed
    )
    code, stdout, stderr = await run_voicehooks(env, "migrate")
    assert code != 0 and stdout == ""
    assert stderr.count("\n") == 1, stderr
    assert "VOICEHOOKS_ENCRYPTION_KEYS" in stderr
    assert "Traceback" not in stderr
    for part in malformed.split(","):
        if part.strip():
            assert part.strip() not in stderr


async def test_embedded_mode_generates_a_private_key_once_and_reuses_it():
    # Not in pytest's tmp_path: the embedded server runs as another user when the tests run
    # as root, and pytest makes its temporary root private again at every session start.
    with tempfile.TemporaryDirectory() as directory:
        await _generates_and_reuses(Path(directory) / "data")


async def _generates_and_reuses(data_dir: Path) -> None:
    env = _without_voicehooks_settings(VOICEHOOKS_DATA_DIR=str(data_dir))
    key_file = data_dir / KEY_FILE_NAME

    code, _, stderr = await run_voicehooks(env, "migrate", timeout=90)
    assert code == 0, stderr
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    first = key_file.read_text()
    KeyRing.parse(first)  # a valid key: base64 of 32 bytes
    assert first.strip() not in stderr

    code, stdout, stderr = await run_voicehooks(env, "rotate-encryption-key", timeout=90)
    assert code == 0, stderr
    assert "re-encrypted the signing keys of 0 subscriptions" in stdout
    assert key_file.read_text() == first  # reused, not replaced
