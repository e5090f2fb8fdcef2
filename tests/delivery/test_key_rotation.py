"""Signing key rotation (SPEC §2 PATCH, §4): replaced keys keep signing `webhook-signature`."""

import pytest

from tests.operations_helpers import (
    bird_signature,
    header,
    ingest,
    signature_entries,
    standard_verifies,
)
from tests.support import call_event, create_subscription, wait_until

OLD_KEY = "old-signing-key-0001"
NEWER_KEY = "newer-signing-key-0002"
NEWEST_KEY = "newest-signing-key-0003"


async def _rotate(client, tenant, subscription_id: str, key: str) -> dict:
    response = await client.patch(
        tenant.subscription(subscription_id), json={"signingKey": key}, headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    return response.json()


async def _next_delivery(client, tenant, receiver, call_id: str):
    before = len(receiver.to("/hook"))
    await ingest(client, call_event(tenant.workspace_id, call_id=call_id))
    await wait_until(lambda: len(receiver.to("/hook")) > before)
    return receiver.to("/hook")[-1]


def _signer_of_each_entry(received, keys: list[str]) -> list[list[str]]:
    """For each `v1,` entry of `webhook-signature`, the keys that verify it."""
    return [
        [key for key in keys if standard_verifies(key, received, entry)]
        for entry in signature_entries(received)
    ]


async def test_a_rotated_key_signs_alongside_the_new_one(client, tenant, receiver, dispatcher):
    url = f"{receiver.url}/hook"
    sub = await create_subscription(client, tenant, url=url, signingKey=OLD_KEY)

    rotated = await _rotate(client, tenant, sub["id"], NEWER_KEY)
    assert rotated["signingKey"] == "********" + NEWER_KEY[-4:]
    assert NEWER_KEY not in str(rotated) and OLD_KEY not in str(rotated)
    fetched = (await client.get(tenant.subscription(sub["id"]), headers=tenant.headers)).json()
    assert fetched["signingKey"] == "********" + NEWER_KEY[-4:]

    received = await _next_delivery(client, tenant, receiver, "call-rotated")
    entries = signature_entries(received)
    assert len(entries) == 2
    assert all(entry.startswith("v1,") for entry in entries)
    # One entry per key: a receiver on either key accepts the delivery.
    assert sorted(_signer_of_each_entry(received, [OLD_KEY, NEWER_KEY])) == [
        [NEWER_KEY],
        [OLD_KEY],
    ]
    assert standard_verifies(NEWER_KEY, received)
    assert standard_verifies(OLD_KEY, received)
    assert not standard_verifies("some-other-key-xyz", received)
    # Bird's signature has room for one key only: the new one.
    assert header(received, "messagebird-signature") == bird_signature(NEWER_KEY, received, url)
    assert header(received, "messagebird-signature") != bird_signature(OLD_KEY, received, url)


async def test_two_rotations_within_the_overlap_give_three_entries(
    client, tenant, receiver, dispatcher
):
    url = f"{receiver.url}/hook"
    sub = await create_subscription(client, tenant, url=url, signingKey=OLD_KEY)
    await _rotate(client, tenant, sub["id"], NEWER_KEY)
    rotated = await _rotate(client, tenant, sub["id"], NEWEST_KEY)
    assert rotated["signingKey"] == "********" + NEWEST_KEY[-4:]

    received = await _next_delivery(client, tenant, receiver, "call-twice")
    keys = [OLD_KEY, NEWER_KEY, NEWEST_KEY]
    assert len(signature_entries(received)) == 3
    assert sorted(_signer_of_each_entry(received, keys)) == sorted([key] for key in keys)
    assert header(received, "messagebird-signature") == bird_signature(NEWEST_KEY, received, url)


async def test_patching_the_same_key_is_not_a_rotation(client, tenant, receiver, dispatcher):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook", signingKey=OLD_KEY)
    await _rotate(client, tenant, sub["id"], OLD_KEY)

    received = await _next_delivery(client, tenant, receiver, "call-same-key")
    assert len(signature_entries(received)) == 1
    assert standard_verifies(OLD_KEY, received)


async def test_a_replaced_key_stops_signing_when_its_overlap_ends(
    client, tenant, receiver, dispatcher, db
):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook", signingKey=OLD_KEY)
    await _rotate(client, tenant, sub["id"], NEWER_KEY)
    # 24 hours later: the overlap of the old key has ended.
    await db.execute(
        "UPDATE subscriptions SET previous_signing_keys = ("
        "  SELECT jsonb_agg(jsonb_set(entry, '{expiresAt}',"
        "         to_jsonb(to_char((now() - interval '1 second') AT TIME ZONE 'UTC',"
        '                          \'YYYY-MM-DD"T"HH24:MI:SS"+00:00"\'))))'
        "  FROM jsonb_array_elements(previous_signing_keys) AS entry)"
        " WHERE id = $1::uuid",
        sub["id"],
    )

    received = await _next_delivery(client, tenant, receiver, "call-after-overlap")
    assert len(signature_entries(received)) == 1
    assert standard_verifies(NEWER_KEY, received)
    assert not standard_verifies(OLD_KEY, received)


@pytest.mark.parametrize("settings_overrides", [{"key_rotation_overlap": 0}])
async def test_without_overlap_the_old_key_no_longer_signs(client, tenant, receiver, dispatcher):
    url = f"{receiver.url}/hook"
    sub = await create_subscription(client, tenant, url=url, signingKey=OLD_KEY)
    await _rotate(client, tenant, sub["id"], NEWER_KEY)

    received = await _next_delivery(client, tenant, receiver, "call-no-overlap")
    assert len(signature_entries(received)) == 1
    assert standard_verifies(NEWER_KEY, received)
    assert not standard_verifies(OLD_KEY, received)
    assert header(received, "messagebird-signature") == bird_signature(NEWER_KEY, received, url)


async def test_a_short_new_key_is_masked_entirely(client, tenant, receiver):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook", signingKey=OLD_KEY)
    rotated = await _rotate(client, tenant, sub["id"], "short-k1")
    assert rotated["signingKey"] == "********"


async def test_rotating_back_to_a_replaced_key_signs_once_per_key(
    client, tenant, receiver, dispatcher
):
    sub = await create_subscription(client, tenant, url=f"{receiver.url}/hook", signingKey=OLD_KEY)
    await _rotate(client, tenant, sub["id"], NEWER_KEY)
    await _rotate(client, tenant, sub["id"], OLD_KEY)

    received = await _next_delivery(client, tenant, receiver, "call-back-again")
    # The current key and the one it replaced; the current key is not listed twice.
    assert sorted(_signer_of_each_entry(received, [OLD_KEY, NEWER_KEY])) == [
        [NEWER_KEY],
        [OLD_KEY],
    ]
