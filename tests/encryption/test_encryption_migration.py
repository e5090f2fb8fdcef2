"""Migration 0002: signing keys stored in clear by revision 0001 become encrypted."""

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from alembic import command
from alembic.script import ScriptDirectory

from tests.delivery_helpers import ingest, running_dispatcher
from tests.migration_helpers import database_at, insert_organization_and_workspace
from tests.operations_helpers import api_client, bird_signature, header, standard_verifies
from tests.subscriptions_helpers import TEST_KEY_RING
from tests.support import bootstrap_tenant, call_event, wait_until
from voicehooks.db.engine import create_engine
from voicehooks.db.migrate import KEY_RING_ATTRIBUTE, alembic_config, upgrade
from voicehooks.db.urls import libpq_url
from voicehooks.encryption import EncryptionConfigError

CURRENT = "plain-current-signing-key-0001"
PREVIOUS = "plain-previous-signing-key-0000"
SHORT = "shortkey"


@pytest.fixture
async def database_at_0001(server_url: str) -> AsyncIterator[str]:
    async with database_at(server_url, "voicehooks_migration", "0001") as url:
        yield url


async def _insert_at_0001(url: str, receiver_url: str) -> dict[str, uuid.UUID]:
    """An organization, a workspace and two subscriptions, as revision 0001 stored them."""
    ids = {name: uuid.uuid4() for name in ("organization", "workspace", "long", "short")}
    expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    connection = await asyncpg.connect(libpq_url(url))
    try:
        await insert_organization_and_workspace(connection, ids["organization"], ids["workspace"])
        for name, key, previous, path in (
            ("long", CURRENT, [{"key": PREVIOUS, "expiresAt": expires}], "/long"),
            ("short", SHORT, [], "/short"),
        ):
            await connection.execute(
                "INSERT INTO subscriptions (id, organization_id, workspace_id, service, event,"
                " url, target_host, signing_key, previous_signing_keys, event_filters)"
                " VALUES ($1, $2, $3, 'channels', 'voice.inbound', $4, '127.0.0.1', $5,"
                " $6::jsonb, '[]'::jsonb)",
                ids[name],
                ids["organization"],
                ids["workspace"],
                receiver_url + path,
                key,
                json.dumps(previous),
            )
    finally:
        await connection.close()
    return ids


async def _subscriptions(url: str) -> dict[uuid.UUID, asyncpg.Record]:
    connection = await asyncpg.connect(libpq_url(url))
    try:
        rows = await connection.fetch("SELECT * FROM subscriptions")
        return {row["id"]: row for row in rows}
    finally:
        await connection.close()


# The newest migration: upgrading goes through 0002 (the one under test) to it.
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


async def _revision(url: str) -> str:
    connection = await asyncpg.connect(libpq_url(url))
    try:
        return str(await connection.fetchval("SELECT version_num FROM alembic_version"))
    finally:
        await connection.close()


async def test_stored_keys_are_encrypted_and_deliveries_still_sign_with_them(
    database_at_0001, receiver
):
    url = database_at_0001
    ids = await _insert_at_0001(url, receiver.url)

    await upgrade(url, key_ring=TEST_KEY_RING)

    assert await _revision(url) == HEAD
    rows = await _subscriptions(url)
    long, short = rows[ids["long"]], rows[ids["short"]]
    for row in (long, short):
        stored = row["signing_key"] + row["previous_signing_keys"]
        assert CURRENT not in stored and PREVIOUS not in stored and SHORT not in stored
        assert row["signing_key"].startswith(TEST_KEY_RING.token_prefix)
    [entry] = json.loads(long["previous_signing_keys"])
    assert TEST_KEY_RING.decrypt(entry["key"], bound_to=ids["long"]) == PREVIOUS
    assert (long["signing_key_hint"], short["signing_key_hint"]) == (CURRENT[-4:], None)

    tenant = await bootstrap_tenant(url, "migrated", "main")
    async with api_client(url) as client, running_dispatcher(url):
        listed = await client.get(tenant.subscriptions, headers=tenant.headers)
        masks = {item["id"]: item["signingKey"] for item in listed.json()["results"]}
        assert masks == {str(ids["long"]): "********" + CURRENT[-4:], str(ids["short"]): "********"}

        await ingest(client, call_event(tenant.workspace_id))
        [to_long] = await wait_until(lambda: receiver.to("/long"))
        [to_short] = await wait_until(lambda: receiver.to("/short"))
    assert standard_verifies(CURRENT, to_long) and standard_verifies(PREVIOUS, to_long)
    assert header(to_long, "messagebird-signature") == bird_signature(
        CURRENT, to_long, f"{receiver.url}/long"
    )
    assert standard_verifies(SHORT, to_short)


async def test_without_the_key_the_migration_refuses_and_changes_nothing(
    database_at_0001, receiver
):
    url = database_at_0001
    ids = await _insert_at_0001(url, receiver.url)

    with pytest.raises(EncryptionConfigError, match="2 subscriptions hold signing keys to encrypt"):
        await upgrade(url)

    assert await _revision(url) == "0001"
    row = (await _subscriptions(url))[ids["long"]]
    assert row["signing_key"] == CURRENT
    assert "signing_key_hint" not in dict(row)


async def test_an_empty_database_needs_no_key_to_migrate(database_at_0001):
    await upgrade(database_at_0001)
    assert await _revision(database_at_0001) == HEAD


async def test_the_downgrade_decrypts_them_again(database_at_0001, receiver):
    url = database_at_0001
    ids = await _insert_at_0001(url, receiver.url)
    await upgrade(url, key_ring=TEST_KEY_RING)

    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as connection:

            def downgrade(sync_connection: object) -> None:
                config = alembic_config()
                config.attributes["connection"] = sync_connection
                config.attributes[KEY_RING_ATTRIBUTE] = TEST_KEY_RING
                command.downgrade(config, "0001")

            await connection.run_sync(downgrade)
    finally:
        await engine.dispose()

    assert await _revision(url) == "0001"
    row = (await _subscriptions(url))[ids["long"]]
    assert row["signing_key"] == CURRENT
    assert [entry["key"] for entry in json.loads(row["previous_signing_keys"])] == [PREVIOUS]
