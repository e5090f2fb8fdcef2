"""`voicehooks rotate-encryption-key` (SPEC §5): every stored signing key re-encrypted under the
first of VOICEHOOKS_ENCRYPTION_KEYS, while the service runs; then the old key can go."""

import asyncio
import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from tests.delivery_helpers import ingest, running_dispatcher
from tests.operations_helpers import (
    api_client,
    bird_signature,
    header,
    run_voicehooks,
    service_environment,
    signature_entries,
    spawn_voicehooks,
    standard_verifies,
)
from tests.support import Received, call_event, create_subscription, wait_until
from voicehooks.db.urls import libpq_url
from voicehooks.encryption import KeyRing

OLD = base64.b64encode(b"old-encryption-key-for-rotation!").decode()
NEW = base64.b64encode(b"new-encryption-key-for-rotation!").decode()
UNKNOWN = base64.b64encode(b"a-key-the-rotation-is-not-given!").decode()
ROTATING = f"{NEW},{OLD}"  # what every process runs with during the rotation
NEW_RING = KeyRing.parse(NEW)
# At most 5 subscriptions may share an event and filter set: 5 sets, each with `ringing`.
FILTER_SETS = [[], ["completed"], ["busy"], ["failed"], ["no-answer"]]
SUBSCRIPTIONS = 25
PATCHED_DURING_ROTATION = 4


def _filters(n: int) -> list[dict[str, str]]:
    statuses = ["ringing", *FILTER_SETS[n % len(FILTER_SETS)]]
    return [{"key": "status", "value": status} for status in statuses]


async def _stored_tokens(db: asyncpg.Connection) -> list[str]:
    tokens = []
    for row in await db.fetch("SELECT signing_key, previous_signing_keys FROM subscriptions"):
        tokens.append(row["signing_key"])
        tokens += [entry["key"] for entry in json.loads(row["previous_signing_keys"])]
    return tokens


async def _stored_keys(db: asyncpg.Connection, ring: KeyRing) -> dict[str, tuple[str, list[str]]]:
    keys = {}
    for row in await db.fetch("SELECT id, signing_key, previous_signing_keys FROM subscriptions"):
        previous = [
            ring.decrypt(entry["key"], bound_to=row["id"])
            for entry in json.loads(row["previous_signing_keys"])
        ]
        keys[str(row["id"])] = (ring.decrypt(row["signing_key"], bound_to=row["id"]), previous)
    return keys


def _signed_by(received: Received, url: str, current: str, previous: list[str]) -> bool:
    """Signed as a subscription with these keys signs: every key verifies, Bird's is current."""
    return (
        len(signature_entries(received)) == 1 + len(previous)
        and all(standard_verifies(key, received) for key in (current, *previous))
        and header(received, "messagebird-signature") == bird_signature(current, received, url)
    )


async def _rotate(database_url: str, keys: str, *args: str) -> tuple[int, str, str]:
    env = service_environment(database_url, VOICEHOOKS_ENCRYPTION_KEYS=keys)
    return await run_voicehooks(env, "rotate-encryption-key", *args)


async def test_rotation_while_the_service_runs_then_the_old_key_can_go(
    tenant, receiver, database_url, db
):
    # Written while OLD was the only key; every other one has a replaced key in its overlap.
    expected: dict[str, tuple[str, list[str]]] = {}
    async with api_client(database_url, encryption_keys=OLD) as old_api:
        for n in range(SUBSCRIPTIONS):
            first = f"first-signing-key-{n:02d}-{uuid.uuid4().hex}"
            sub = await create_subscription(
                old_api,
                tenant,
                url=f"{receiver.url}/s{n}",
                signingKey=first,
                eventFilters=_filters(n),
            )
            expected[sub["id"]] = (first, [])
            if n % 2:
                second = f"second-signing-key-{n:02d}-{uuid.uuid4().hex}"
                patched = await old_api.patch(
                    tenant.subscription(sub["id"]),
                    json={"signingKey": second},
                    headers=tenant.headers,
                )
                assert patched.status_code == 200, patched.text
                expected[sub["id"]] = (second, [first])
    ids = list(expected)
    paths = {sub_id: f"/s{n}" for n, sub_id in enumerate(ids)}

    # The service, restarted with NEW first and OLD still there, keeps working while the
    # rotation runs: customers rotate signing keys, events are delivered.
    async with (
        api_client(database_url, encryption_keys=ROTATING) as api,
        running_dispatcher(database_url, encryption_keys=ROTATING),
    ):
        rotation = asyncio.create_task(_rotate(database_url, ROTATING, "--batch-size", "4"))
        events = 0
        while not rotation.done() or events < 3:
            sub_id = ids[events % PATCHED_DURING_ROTATION]
            key = f"patched-signing-key-{events:02d}-{uuid.uuid4().hex}"
            patched = await api.patch(
                tenant.subscription(sub_id), json={"signingKey": key}, headers=tenant.headers
            )
            assert patched.status_code == 200, patched.text
            current, previous = expected[sub_id]
            expected[sub_id] = (key, [*previous, current])
            await ingest(api, call_event(tenant.workspace_id, call_id=f"during-{events}"))
            events += 1
        code, stdout, stderr = await rotation
        assert code == 0, stderr
        assert stdout == (
            f"re-encrypted the signing keys of {SUBSCRIPTIONS} subscriptions "
            f"under encryption key {NEW_RING.primary_id}\n"
        )
        # Subscriptions nobody touched meanwhile were delivered to, signed right, throughout.
        untouched = ids[PATCHED_DURING_ROTATION:]
        await wait_until(lambda: all(len(receiver.to(paths[s])) >= events for s in untouched))
        for sub_id in untouched:
            url = f"{receiver.url}{paths[sub_id]}"
            assert all(_signed_by(r, url, *expected[sub_id]) for r in receiver.to(paths[sub_id]))

    # Nothing is left under OLD, and nothing a customer changed meanwhile was lost.
    assert all(token.startswith(NEW_RING.token_prefix) for token in await _stored_tokens(db))
    assert await _stored_keys(db, NEW_RING) == expected

    # OLD removed from the environment: the service signs with every key as before.
    async with (
        api_client(database_url, encryption_keys=NEW) as api,
        running_dispatcher(database_url, encryption_keys=NEW),
    ):
        await ingest(api, call_event(tenant.workspace_id, call_id="after-rotation"))

        def after(sub_id: str) -> list[Received]:
            return [
                r
                for r in receiver.to(paths[sub_id])
                if r.json()["payload"]["id"] == "after-rotation"
            ]

        await wait_until(lambda: all(after(sub_id) for sub_id in ids))
    for sub_id in ids:
        [received] = after(sub_id)
        assert _signed_by(received, f"{receiver.url}{paths[sub_id]}", *expected[sub_id])

    # A second rotation finds nothing to do.
    code, stdout, stderr = await _rotate(database_url, NEW)
    assert code == 0, stderr
    assert "re-encrypted the signing keys of 0 subscriptions" in stdout


async def test_a_key_written_while_the_rotation_waits_for_its_row_is_kept(tenant, database_url, db):
    """A PATCH that holds the row when the rotation reaches it commits first; the rotation then
    re-encrypts what the PATCH wrote instead of writing back what it had read."""
    async with api_client(database_url, encryption_keys=OLD) as old_api:
        subs = [
            await create_subscription(old_api, tenant, signingKey=f"signing-key-before-{n}-0000")
            for n in range(3)
        ]
    held = uuid.UUID(subs[1]["id"])
    writer = await asyncpg.connect(libpq_url(database_url))
    transaction = writer.transaction()
    await transaction.start()
    committed = False
    try:
        await writer.execute("SELECT 1 FROM subscriptions WHERE id = $1 FOR NO KEY UPDATE", held)
        env = service_environment(database_url, VOICEHOOKS_ENCRYPTION_KEYS=ROTATING)
        pipe = asyncio.subprocess.PIPE
        rotation = await spawn_voicehooks(
            env, "rotate-encryption-key", "--batch-size", "1", stdout=pipe, stderr=pipe
        )

        async def rotation_waits_for_the_row() -> bool:
            return bool(
                await db.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                )
            )

        await wait_until(rotation_waits_for_the_row, timeout=30)
        # What a PATCH by a process running with NEW first writes: the new key under NEW, the
        # replaced one moved over as stored (under OLD).
        patched = KeyRing.parse(ROTATING).encrypt("signing-key-patched-meanwhile", bound_to=held)
        expires = (datetime.now(UTC) + timedelta(hours=24)).isoformat()
        await writer.execute(
            "UPDATE subscriptions SET signing_key = $2, previous_signing_keys ="
            " jsonb_build_array(jsonb_build_object('key', signing_key, 'expiresAt', $3::text))"
            " WHERE id = $1",
            held,
            patched,
            expires,
        )
        await transaction.commit()
        committed = True
        stdout, stderr = await asyncio.wait_for(rotation.communicate(), 30)
    finally:
        if not committed:
            await transaction.rollback()
        await writer.close()
    assert rotation.returncode == 0, stderr.decode()
    assert "re-encrypted the signing keys of 3 subscriptions" in stdout.decode()

    keys = await _stored_keys(db, NEW_RING)  # NEW alone decrypts everything
    assert keys[str(held)] == ("signing-key-patched-meanwhile", ["signing-key-before-1-0000"])
    assert keys[subs[0]["id"]] == ("signing-key-before-0-0000", [])


async def test_keys_that_no_given_key_decrypts_are_reported_and_left_alone(
    tenant, database_url, db
):
    async with api_client(database_url, encryption_keys=UNKNOWN) as unknown_api:
        lost = await create_subscription(unknown_api, tenant, url="https://example.com/lost")
    async with api_client(database_url, encryption_keys=OLD) as old_api:
        kept = await create_subscription(old_api, tenant, signingKey="a-signing-key-under-old")
    before = await db.fetchval(
        "SELECT signing_key FROM subscriptions WHERE id = $1", uuid.UUID(lost["id"])
    )

    code, stdout, stderr = await _rotate(database_url, ROTATING)

    assert code == 1  # the old key must not be removed yet
    assert "re-encrypted the signing keys of 1 subscriptions" in stdout
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert "1 subscriptions hold signing keys that none of VOICEHOOKS_ENCRYPTION_KEYS" in stderr
    assert (
        await db.fetchval(
            "SELECT signing_key FROM subscriptions WHERE id = $1", uuid.UUID(lost["id"])
        )
        == before
    )
    assert (await _stored_keys_of(db, kept["id"])) == "a-signing-key-under-old"


async def _stored_keys_of(db: asyncpg.Connection, subscription_id: str) -> str:
    token = await db.fetchval(
        "SELECT signing_key FROM subscriptions WHERE id = $1", uuid.UUID(subscription_id)
    )
    return NEW_RING.decrypt(token, bound_to=uuid.UUID(subscription_id))
