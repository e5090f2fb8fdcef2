"""SPEC §2/§3 at the HTTP level: 401 challenges, authentication before parsing, timestamps, 405."""

import uuid

import pytest

from tests.operations_helpers import INGEST_HEADERS
from tests.subscriptions_helpers import assert_problem
from tests.support import SEED_BODY, Tenant, call_event, create_subscription

NOT_JSON_BODIES = [b"\x00", b"{", b"\xff\xfe", b'{"service": "channels",}']


def _writes(tenant: Tenant, subscription_id: object) -> list[tuple[str, str]]:
    """Every public operation that takes a body."""
    one = tenant.subscription(subscription_id)
    return [("POST", tenant.subscriptions), ("PATCH", one), ("POST", f"{one}/recover")]


# -- 401: what is wrong, and how to authenticate -----------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "detail_names"),
    [
        (None, "AccessKey"),
        ("Bearer whatever", "AccessKey"),
        ("AccessKey vhk_never-issued", "access key"),
    ],
)
async def test_every_public_401_says_what_is_missing_and_challenges_accesskey(
    client, tenant, authorization, detail_names
):
    subscription = await create_subscription(client, tenant)
    headers = {} if authorization is None else {"Authorization": authorization}
    one = tenant.subscription(subscription["id"])
    for method, path in [
        ("GET", tenant.subscriptions),
        ("GET", one),
        ("DELETE", one),
        ("GET", f"{one}/logs"),
        ("POST", f"{one}/test"),
        *_writes(tenant, subscription["id"]),
    ]:
        response = await client.request(method, path, headers=headers, json={})
        problem = assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("AccessKey"), (method, path)
        assert detail_names in problem["detail"]
        assert "bearer" not in problem["detail"].lower()


@pytest.mark.parametrize(
    ("authorization", "detail_names"),
    [
        (None, "Bearer <ingest token>"),
        ("AccessKey something", "Bearer <ingest token>"),
        ("Bearer not-the-token", "ingest token"),
    ],
)
async def test_every_ingestion_401_names_the_bearer_ingest_token(
    client, tenant, authorization, detail_names
):
    headers = {} if authorization is None else {"Authorization": authorization}
    for path in ("/internal/v1/events", "/internal/v1/events/batch"):
        response = await client.post(path, json=call_event(tenant.workspace_id), headers=headers)
        problem = assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer"), path
        assert detail_names in problem["detail"]
        assert "access key" not in problem["detail"].lower()


@pytest.mark.parametrize("settings_overrides", [{"ingest_token": None}])
async def test_ingestion_without_a_configured_token_says_so(client, tenant):
    response = await client.post(
        "/internal/v1/events", json=call_event(tenant.workspace_id), headers=INGEST_HEADERS
    )
    problem = assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "VOICEHOOKS_INGEST_TOKEN" in problem["detail"]


# -- authentication before any parsing or validation -------------------------------------------


@pytest.mark.parametrize("body", NOT_JSON_BODIES)
@pytest.mark.parametrize("authorization", [None, "AccessKey nope"])
async def test_a_body_that_is_not_json_is_401_without_a_valid_key(
    client, tenant, db, body, authorization
):
    subscription = await create_subscription(client, tenant)
    headers = {"content-type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    for method, path in _writes(tenant, subscription["id"]):
        response = await client.request(method, path, content=body, headers=headers)
        assert_problem(response, 401)
    assert await db.fetchval("SELECT count(*) FROM subscriptions") == 1


@pytest.mark.parametrize("body", NOT_JSON_BODIES)
async def test_a_body_that_is_not_json_is_401_without_the_ingest_token(client, body):
    for path in ("/internal/v1/events", "/internal/v1/events/batch"):
        response = await client.post(
            path,
            content=body,
            headers={"content-type": "application/json", "Authorization": "Bearer nope"},
        )
        assert_problem(response, 401)


@pytest.mark.parametrize("body", NOT_JSON_BODIES)
async def test_with_a_valid_key_a_body_that_is_not_json_is_still_422(client, tenant, body):
    subscription = await create_subscription(client, tenant)
    headers = {**tenant.headers, "content-type": "application/json"}
    for method, path in _writes(tenant, subscription["id"]):
        response = await client.request(method, path, content=body, headers=headers)
        problem = assert_problem(response, 422, field="body")
        assert "JSON" in problem["detail"]
    for path in ("/internal/v1/events", "/internal/v1/events/batch"):
        response = await client.post(
            path, content=body, headers={**INGEST_HEADERS, "content-type": "application/json"}
        )
        assert_problem(response, 422, field="body")


async def test_invalid_fields_and_queries_are_401_without_a_valid_key(client, tenant):
    headers = {"Authorization": "AccessKey nope"}
    assert_problem(await client.get(f"{tenant.subscriptions}?limit=0", headers=headers), 401)
    bad = {**SEED_BODY, "service": 7, "eventFilters": "x"}
    assert_problem(await client.post(tenant.subscriptions, json=bad, headers=headers), 401)


# -- timestamps are RFC 3339 strings with a time zone, nothing else -----------------------------


NOT_RFC3339 = [
    0,
    1700000000,
    1700000000.5,
    "1700000000",
    "0",
    True,
    "2024-01-01",
    "2024-01-01 00:00:00Z",
    "2024-01-01T00:00Z",
    "2024-01-01T00:00:00",
    ["2024-01-01T00:00:00Z"],
]


@pytest.mark.parametrize("since", NOT_RFC3339)
async def test_recover_refuses_every_since_that_is_not_an_rfc3339_string(client, tenant, since):
    subscription = await create_subscription(client, tenant, **SEED_BODY)
    response = await client.post(
        f"{tenant.subscription(subscription['id'])}/recover",
        json={"since": since},
        headers=tenant.headers,
    )
    assert_problem(response, 422, field="since")


@pytest.mark.parametrize("occurred_at", NOT_RFC3339)
async def test_ingestion_refuses_every_occurred_at_that_is_not_an_rfc3339_string(
    client, tenant, db, occurred_at
):
    item = {**call_event(tenant.workspace_id), "occurredAt": occurred_at}
    response = await client.post("/internal/v1/events", json=item, headers=INGEST_HEADERS)
    assert_problem(response, 422, field="occurredAt")
    assert await db.fetchval("SELECT count(*) FROM events") == 0


@pytest.mark.parametrize(
    "value",
    ["2024-01-01T00:00:00Z", "2024-01-01t00:00:00.123z", "2024-01-01T02:00:00.5+02:00"],
)
async def test_rfc3339_timestamps_are_taken(client, tenant, value):
    subscription = await create_subscription(client, tenant)
    response = await client.post(
        f"{tenant.subscription(subscription['id'])}/recover",
        json={"since": value},
        headers=tenant.headers,
    )
    assert response.status_code == 202, response.text
    item = {**call_event(tenant.workspace_id), "occurredAt": value}
    response = await client.post("/internal/v1/events", json=item, headers=INGEST_HEADERS)
    assert response.status_code == 202, response.text


# -- 405 lists every method of the path --------------------------------------------------------


async def test_405_lists_every_method_the_path_supports(client, tenant):
    one = tenant.subscription(uuid.uuid4())
    cases = [
        ("OPTIONS", tenant.subscriptions, {"GET", "POST"}),
        ("PUT", tenant.subscriptions, {"GET", "POST"}),
        ("PUT", one, {"GET", "PATCH", "DELETE"}),
        ("OPTIONS", one, {"GET", "PATCH", "DELETE"}),
        ("GET", f"{one}/recover", {"POST"}),
        ("GET", "/internal/v1/events", {"POST"}),
        ("POST", "/healthz", {"GET"}),
    ]
    for method, path, allowed in cases:
        response = await client.request(method, path, headers=tenant.headers)
        assert_problem(response, 405)
        listed = {item.strip() for item in response.headers["allow"].split(",")}
        assert listed == allowed, (method, path, response.headers["allow"])
