"""SPEC §2 tenancy and auth: access keys, 401 versus 404, isolation between organizations."""

import hashlib
import uuid

import pytest

from tests.subscriptions_helpers import assert_problem
from tests.support import SEED_BODY, Tenant, bootstrap_tenant, create_subscription


def _operations(tenant: Tenant, subscription_id: object) -> list[tuple[str, str, dict | None]]:
    """Every subscriptions operation as (method, path, json body)."""
    one = tenant.subscription(subscription_id)
    return [
        ("GET", tenant.subscriptions, None),
        ("POST", tenant.subscriptions, SEED_BODY),
        ("GET", one, None),
        ("PATCH", one, {"template": "changed"}),
        ("DELETE", one, None),
        ("GET", f"{one}/logs", None),
        ("GET", f"{one}/deliveries", None),
        ("POST", f"{one}/test", None),
    ]


async def _call(client, method: str, path: str, body: dict | None, headers: dict[str, str]):
    return await client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "AccessKey",
        "AccessKey ",
        "AccessKey vhk_this-key-was-never-issued",
        "Bearer {key}",
        "Basic {key}",
        "{key}",
        "AccessKey {key}x",
        "AccessKey {upper}",
        "AccessKey\t",
    ],
)
async def test_missing_wrong_or_malformed_key_is_401(client, tenant, db, authorization):
    subscription = await create_subscription(client, tenant)
    headers = {}
    if authorization is not None:
        headers["Authorization"] = authorization.format(
            key=tenant.access_key, upper=tenant.access_key.upper()
        )
    for method, path, body in _operations(tenant, subscription["id"]):
        response = await _call(client, method, path, body, headers)
        assert_problem(response, 401)
    assert await db.fetchval("SELECT count(*) FROM subscriptions") == 1
    row = await db.fetchrow("SELECT template FROM subscriptions")
    assert row["template"] is None


async def test_wrong_key_is_401_even_for_paths_that_do_not_exist(client, tenant):
    stranger = Tenant(uuid.uuid4(), uuid.uuid4(), "vhk_wrong")
    for method, path, body in _operations(stranger, uuid.uuid4()):
        assert_problem(await _call(client, method, path, body, stranger.headers), 401)


async def test_a_valid_key_opens_its_workspace(client, tenant):
    response = await client.get(tenant.subscriptions, headers=tenant.headers)
    assert response.status_code == 200
    assert response.json() == {"results": []}


async def test_another_organizations_org_id_is_404(client, tenant, other_tenant, db):
    theirs = await create_subscription(client, other_tenant)
    # My key, their organization and workspace: as if it did not exist.
    foreign = Tenant(other_tenant.organization_id, other_tenant.workspace_id, tenant.access_key)
    for method, path, body in _operations(foreign, theirs["id"]):
        assert_problem(await _call(client, method, path, body, foreign.headers), 404)
    # My key, their organization, my workspace.
    mixed = Tenant(other_tenant.organization_id, tenant.workspace_id, tenant.access_key)
    for method, path, body in _operations(mixed, theirs["id"]):
        assert_problem(await _call(client, method, path, body, mixed.headers), 404)
    assert await db.fetchval("SELECT count(*) FROM subscriptions") == 1
    got = await client.get(other_tenant.subscription(theirs["id"]), headers=other_tenant.headers)
    assert got.json()["template"] is None


async def test_another_organizations_workspace_id_is_404(client, tenant, other_tenant, db):
    theirs = await create_subscription(client, other_tenant)
    foreign = Tenant(tenant.organization_id, other_tenant.workspace_id, tenant.access_key)
    for method, path, body in _operations(foreign, theirs["id"]):
        assert_problem(await _call(client, method, path, body, foreign.headers), 404)
    assert await db.fetchval("SELECT count(*) FROM subscriptions") == 1


async def test_another_organizations_subscription_id_is_404(client, tenant, other_tenant):
    theirs = await create_subscription(client, other_tenant, template="theirs")
    one = tenant.subscription(theirs["id"])
    for method, body in (("GET", None), ("PATCH", {"template": "mine"}), ("DELETE", None)):
        assert_problem(await _call(client, method, one, body, tenant.headers), 404)
    for suffix in ("/logs", "/deliveries"):
        assert_problem(await client.get(one + suffix, headers=tenant.headers), 404)
    # Untouched, and still there for its owner.
    got = await client.get(other_tenant.subscription(theirs["id"]), headers=other_tenant.headers)
    assert got.status_code == 200
    assert got.json()["template"] == "theirs"
    # Not listed either.
    mine = await client.get(tenant.subscriptions, headers=tenant.headers)
    assert mine.json() == {"results": []}


async def test_a_foreign_id_answers_exactly_like_an_unknown_one(client, tenant, other_tenant):
    theirs = await create_subscription(client, other_tenant)
    foreign = await client.get(tenant.subscription(theirs["id"]), headers=tenant.headers)
    unknown = await client.get(tenant.subscription(uuid.uuid4()), headers=tenant.headers)
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json() == unknown.json()
    foreign_org = await client.get(
        Tenant(other_tenant.organization_id, other_tenant.workspace_id, "").subscriptions,
        headers=tenant.headers,
    )
    unknown_org = await client.get(
        Tenant(uuid.uuid4(), uuid.uuid4(), "").subscriptions, headers=tenant.headers
    )
    assert foreign_org.status_code == unknown_org.status_code == 404
    assert foreign_org.json() == unknown_org.json()


@pytest.mark.parametrize(
    "path",
    [
        "/organizations/not-a-uuid/workspaces/{workspace}/webhook-subscriptions",
        "/organizations/{organization}/workspaces/123/webhook-subscriptions",
        "/organizations/{organization}/workspaces/{workspace}/webhook-subscriptions/abc",
        "/organizations/{organization}/workspaces/{workspace}/webhook-subscriptions/1%27%20or%201",
        "/organizations/{organization}/workspaces/{workspace}/webhook-subscriptions/{random}",
        "/organizations/{random}/workspaces/{workspace}/webhook-subscriptions",
        "/organizations/{organization}/workspaces/{random}/webhook-subscriptions",
        "/organizations/{organization}/workspaces/{workspace}/webhook-subscriptions/{random}/logs",
    ],
)
async def test_non_uuid_or_unknown_ids_are_404(client, tenant, path):
    url = path.format(
        organization=tenant.organization_id, workspace=tenant.workspace_id, random=uuid.uuid4()
    )
    assert_problem(await client.get(url, headers=tenant.headers), 404)


async def test_non_uuid_subscription_id_is_404_for_patch_and_delete(client, tenant):
    path = tenant.subscription("not-a-uuid")
    assert_problem(await client.patch(path, json={"template": "x"}, headers=tenant.headers), 404)
    assert_problem(await client.delete(path, headers=tenant.headers), 404)


async def test_a_key_sees_every_workspace_of_its_organization(client, tenant, database_url):
    second = await bootstrap_tenant(database_url, "acme", "second")
    assert second.organization_id == tenant.organization_id
    assert second.workspace_id != tenant.workspace_id
    # The first key opens the second workspace, and the second key the first.
    via_first_key = Tenant(second.organization_id, second.workspace_id, tenant.access_key)
    created = await create_subscription(client, via_first_key)
    assert created["workspaceId"] == str(second.workspace_id)
    got = await client.get(second.subscription(created["id"]), headers=second.headers)
    assert got.status_code == 200
    via_second_key = Tenant(tenant.organization_id, tenant.workspace_id, second.access_key)
    listed = await client.get(via_second_key.subscriptions, headers=via_second_key.headers)
    assert listed.status_code == 200
    # Workspaces stay apart: the subscription belongs to the second one only.
    assert listed.json() == {"results": []}
    assert_problem(
        await client.get(tenant.subscription(created["id"]), headers=tenant.headers), 404
    )


async def test_access_keys_are_stored_hashed(client, tenant, other_tenant, db):
    rows = await db.fetch("SELECT * FROM access_keys")
    assert len(rows) == 2
    for key in (tenant.access_key, other_tenant.access_key):
        assert len(key) >= 32
        for row in rows:
            for value in row.values():
                text = value.hex() if isinstance(value, bytes) else str(value)
                assert key not in text
                if isinstance(value, bytes):
                    assert key.encode() not in value
    hashes = {bytes(row["key_hash"]) for row in rows}
    assert hashlib.sha256(tenant.access_key.encode()).digest() in hashes


async def test_bootstrap_reuses_the_tenancy_and_issues_a_new_key(client, tenant, database_url, db):
    again = await bootstrap_tenant(database_url, "acme", "main")
    assert again.organization_id == tenant.organization_id
    assert again.workspace_id == tenant.workspace_id
    assert again.access_key != tenant.access_key
    assert await db.fetchval("SELECT count(*) FROM organizations WHERE name = 'acme'") == 1
    assert await db.fetchval("SELECT count(*) FROM workspaces") == 1
    assert (
        await db.fetchval(
            "SELECT count(*) FROM access_keys WHERE organization_id = $1", tenant.organization_id
        )
        == 2
    )
    # Both keys work, on the same data.
    created = await create_subscription(client, tenant)
    got = await client.get(again.subscription(created["id"]), headers=again.headers)
    assert got.status_code == 200
    assert got.json()["id"] == created["id"]
    third = await bootstrap_tenant(database_url, "acme", "main")
    for key in (tenant, again, third):
        assert (await client.get(tenant.subscriptions, headers=key.headers)).status_code == 200


async def test_a_new_organization_name_is_a_new_tenancy(client, tenant, database_url):
    fresh = await bootstrap_tenant(database_url, "initech", "main")
    assert fresh.organization_id != tenant.organization_id
    assert fresh.workspace_id != tenant.workspace_id
    assert_problem(await client.get(tenant.subscriptions, headers=fresh.headers), 404)
    assert_problem(await client.get(fresh.subscriptions, headers=tenant.headers), 404)
