"""SPEC §2: create, get, list, update and delete webhook subscriptions, and their validation."""

import base64
import copy
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.subscriptions_helpers import (
    PROBLEM_JSON,
    SUBSCRIPTION_FIELDS,
    assert_problem,
    channel,
    parse_timestamp,
    stored_signing_keys,
)
from tests.support import SEED_BODY, bootstrap_tenant, create_subscription
from voicehooks.voice import CALL_STATUSES

STRICT_TARGETS = {"allow_http_targets": False, "allowed_target_networks": ""}
SEED_CHANNEL = "b827924e-9789-4c2f-a4d5-b352175354f6"


async def count_rows(db) -> int:
    return await db.fetchval("SELECT count(*) FROM subscriptions")


async def stored(db, subscription_id: str):
    return await db.fetchrow(
        "SELECT * FROM subscriptions WHERE id = $1", uuid.UUID(subscription_id)
    )


# --- create -------------------------------------------------------------------------------


async def test_seed_example_verbatim_creates_the_subscription(client, tenant, db):
    before = datetime.now(UTC)
    response = await client.post(tenant.subscriptions, json=SEED_BODY, headers=tenant.headers)

    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/json")
    created = response.json()
    assert set(created) == SUBSCRIPTION_FIELDS
    assert uuid.UUID(created["id"]).version == 4
    assert created["organizationId"] == str(tenant.organization_id)
    assert created["workspaceId"] == str(tenant.workspace_id)
    assert created["service"] == "channels"
    assert created["event"] == "voice.inbound"
    assert created["url"] == "https://example.com/hook"
    assert created["eventFilters"] == SEED_BODY["eventFilters"]
    assert created["template"] is None
    assert created["signingKey"] == "********"  # 11 characters: masked entirely
    assert created["status"] == "active"
    assert created["statusReason"] is None
    created_at = parse_timestamp(created["createdAt"])
    updated_at = parse_timestamp(created["updatedAt"])
    assert before - timedelta(seconds=5) <= created_at <= datetime.now(UTC) + timedelta(seconds=5)
    assert updated_at == created_at

    fetched = await client.get(tenant.subscription(created["id"]), headers=tenant.headers)
    assert fetched.status_code == 200
    assert fetched.json() == created
    row = await stored(db, created["id"])
    assert "mysecretkey" not in row["signing_key"]  # stored encrypted...
    assert (await stored_signing_keys(db, created["id"]))[0] == "mysecretkey"  # ...to sign with


@pytest.mark.parametrize(
    ("key", "masked"),
    [
        ("0123456789abcdef", "********cdef"),
        ("0123456789abcde", "********"),
        ("x" * 511 + "Z", "********xxxZ"),
        ("mysecret", "********"),
    ],
)
async def test_signing_key_is_masked_in_every_response(client, tenant, key, masked):
    created = await create_subscription(client, tenant, signingKey=key)
    assert created["signingKey"] == masked
    got = await client.get(tenant.subscription(created["id"]), headers=tenant.headers)
    assert got.json()["signingKey"] == masked
    listed = await client.get(tenant.subscriptions, headers=tenant.headers)
    assert [item["signingKey"] for item in listed.json()["results"]] == [masked]
    patched = await client.patch(
        tenant.subscription(created["id"]), json={"template": "t"}, headers=tenant.headers
    )
    assert patched.json()["signingKey"] == masked
    assert key not in got.text + listed.text + patched.text + json.dumps(created)


async def test_omitted_signing_key_is_generated_and_shown_once(client, tenant, db):
    first = await create_subscription(client, tenant)
    second = await create_subscription(client, tenant, url="https://example.org/other")
    key = first["signingKey"]
    assert not key.startswith("********")
    assert len(key) >= 32 and key.isprintable() and " " not in key
    assert key != second["signingKey"]
    assert (await stored_signing_keys(db, first["id"]))[0] == key

    got = await client.get(tenant.subscription(first["id"]), headers=tenant.headers)
    assert got.json()["signingKey"] == "********" + key[-4:]
    listed = await client.get(tenant.subscriptions, headers=tenant.headers)
    assert key not in listed.text


async def test_template_is_stored_and_returned(client, tenant):
    created = await create_subscription(client, tenant, template='{"call": "{{payload.id}}"}')
    assert created["template"] == '{"call": "{{payload.id}}"}'
    got = await client.get(tenant.subscription(created["id"]), headers=tenant.headers)
    assert got.json()["template"] == '{"call": "{{payload.id}}"}'


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"service": "sms"}, "service"),
        ({"service": None}, "service"),
        ({"event": "voice.unknown"}, "event"),
        ({"event": "message.created"}, "event"),
        ({"event": "VOICE.INBOUND"}, "event"),
        ({"url": 42}, "url"),
        ({"eventFilters": {"key": "status", "value": "ringing"}}, "eventFilters"),
        ({"template": "a\x00b"}, "template"),
    ],
)
async def test_create_refuses_invalid_fields(client, tenant, db, change, field):
    body = {**SEED_BODY, **change}
    response = await client.post(tenant.subscriptions, json=body, headers=tenant.headers)
    assert_problem(response, 422, field=field)
    assert await count_rows(db) == 0


@pytest.mark.parametrize("missing", ["service", "event", "url"])
async def test_create_requires_service_event_and_url(client, tenant, db, missing):
    body = {name: value for name, value in SEED_BODY.items() if name != missing}
    response = await client.post(tenant.subscriptions, json=body, headers=tenant.headers)
    assert_problem(response, 422, field=missing)
    assert await count_rows(db) == 0


# --- eventFilters -------------------------------------------------------------------------

CHANNEL_A = "b827924e-9789-4c2f-a4d5-b352175354f6"
CHANNEL_B = "0b0c4d7e-1b1f-4b0e-9a51-6d3b2f3c8a10"


@pytest.mark.parametrize(
    ("event", "filters", "field"),
    [
        ("voice.inbound", [{"key": "channel", "value": CHANNEL_A}], "eventFilters[0].key"),
        ("voice.inbound", [{"key": "direction", "value": "incoming"}], "eventFilters[0].key"),
        (
            "voice.inbound",
            [{"key": "status", "value": "ringing"}, {"key": "Status", "value": "busy"}],
            "eventFilters[1].key",
        ),
        (
            "voice.inbound",
            [{"key": "channelId", "value": CHANNEL_A}, {"key": "channelId", "value": CHANNEL_B}],
            "eventFilters[1].key",
        ),
        ("voice.inbound", [{"key": "channelId", "value": "not-a-uuid"}], "eventFilters[0].value"),
        ("voice.inbound", [{"key": "channelId", "value": ""}], "eventFilters[0].value"),
        ("voice.inbound", [{"key": "status", "value": "accepted"}], "eventFilters[0].value"),
        ("voice.inbound", [{"key": "status", "value": "cancelled"}], "eventFilters[0].value"),
        (
            "voice.inbound",
            [{"key": "channelId", "value": CHANNEL_A}, {"key": "status", "value": "accepted"}],
            "eventFilters[1].value",
        ),
        ("voice.outbound", [{"key": "status", "value": "Completed"}], "eventFilters[0].value"),
        ("voice.outbound", [{"key": "status", "value": "hangup"}], "eventFilters[0].value"),
        (
            "voice.inbound",
            [
                {"key": "status", "value": "completed"},
                {"key": "status", "value": "starting"},
                {"key": "status", "value": "completed"},
            ],
            "eventFilters[2]",
        ),
        (
            "voice.inbound",
            [{"key": "channelId", "value": CHANNEL_A}, {"key": "channelId", "value": CHANNEL_A}],
            "eventFilters[1]",
        ),
        ("voice.inbound", [{"key": "status"}], "eventFilters[0].value"),
        ("voice.inbound", [{"value": "ringing"}], "eventFilters[0].key"),
        ("voice.inbound", [{"key": "status", "value": 7}], "eventFilters[0].value"),
        ("voice.inbound", ["status=ringing"], "eventFilters[0]"),
    ],
)
async def test_event_filters_are_validated_with_field_paths(
    client, tenant, db, event, filters, field
):
    body = {**SEED_BODY, "event": event, "eventFilters": filters}
    response = await client.post(tenant.subscriptions, json=body, headers=tenant.headers)
    problem = assert_problem(response, 422, field=field)
    assert problem["errors"][0]["field"] == field
    assert await count_rows(db) == 0


async def test_every_error_of_the_filters_is_reported(client, tenant):
    body = {
        **SEED_BODY,
        "eventFilters": [
            {"key": "status", "value": "accepted"},
            {"key": "status", "value": "ringing"},
            {"key": "colour", "value": "red"},
        ],
    }
    response = await client.post(tenant.subscriptions, json=body, headers=tenant.headers)
    problem = assert_problem(response, 422)
    assert {error["field"] for error in problem["errors"]} == {
        "eventFilters[0].value",
        "eventFilters[2].key",
    }


@pytest.mark.parametrize("event", sorted(CALL_STATUSES))
async def test_every_status_of_the_event_is_a_valid_filter(client, tenant, event):
    filters = [{"key": "channelId", "value": CHANNEL_A}] + [
        {"key": "status", "value": status} for status in CALL_STATUSES[event]
    ]
    created = await create_subscription(client, tenant, event=event, eventFilters=filters)
    assert created["eventFilters"] == filters


async def test_accepted_is_refused_on_inbound_but_fine_on_outbound(client, tenant):
    accepted = [{"key": "status", "value": "accepted"}]
    inbound = {**SEED_BODY, "event": "voice.inbound", "eventFilters": accepted}
    refused = await client.post(tenant.subscriptions, json=inbound, headers=tenant.headers)
    assert_problem(refused, 422, field="eventFilters[0].value")
    created = await create_subscription(
        client, tenant, event="voice.outbound", eventFilters=accepted
    )
    assert created["event"] == "voice.outbound"
    assert created["eventFilters"] == accepted


async def test_filters_may_be_omitted_or_empty(client, tenant):
    omitted = await create_subscription(client, tenant)
    empty = await create_subscription(client, tenant, eventFilters=[])
    assert omitted["eventFilters"] == [] and empty["eventFilters"] == []


# --- url ----------------------------------------------------------------------------------


BLOCKED_TARGETS = {
    "ipv4": [
        "https://127.0.0.1/hook",
        "https://127.0.0.1:8443/hook",
        "https://127.255.255.254/hook",
        "https://10.0.0.1/hook",
        "https://172.16.5.4/hook",
        "https://192.168.1.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://100.64.0.1/hook",
        "https://224.0.0.1/hook",
        "https://239.255.255.250/hook",
        "https://240.0.0.1/hook",
        "https://255.255.255.255/hook",
        "https://0.0.0.0/hook",
        "https://192.0.2.10/hook",
        "https://198.18.0.1/hook",
        "https://192.0.0.8/hook",
    ],
    "ipv6": [
        "https://[::1]/hook",
        "https://[::]/hook",
        "https://[fe80::1]/hook",
        "https://[fe80::1%25eth0]/hook",
        "https://[fc00::1]/hook",
        "https://[fd12:3456:789a::1]/hook",
        "https://[ff02::1]/hook",
        "https://[2001:db8::1]/hook",
        "https://[fec0::1]/hook",
    ],
    "ipv4-in-ipv6": [
        "https://[::ffff:127.0.0.1]/hook",
        "https://[::ffff:7f00:1]/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "https://[::ffff:169.254.169.254]/hook",
        "https://[64:ff9b::7f00:1]/hook",
        "https://[2002:7f00:1::1]/hook",
    ],
    "odd-encodings": [
        "https://2130706433/hook",
        "https://0x7f000001/hook",
        "https://0x7f.1/hook",
        "https://0177.0.0.1/hook",
        "https://017700000001/hook",
        "https://127.1/hook",
        "https://167772161/hook",
        "https://127.0.0.1./hook",
    ],
    "names": ["https://localhost/hook", "https://LOCALHOST:8443/hook"],
}


class TestTargetUrls:
    """The production address rules: no http, no allowed networks."""

    @pytest.fixture
    def settings_overrides(self):
        return dict(STRICT_TARGETS)

    @pytest.mark.parametrize("kind", sorted(BLOCKED_TARGETS))
    async def test_internal_addresses_are_refused(self, client, tenant, db, kind):
        for url in BLOCKED_TARGETS[kind]:
            body = {**SEED_BODY, "url": url}
            response = await client.post(tenant.subscriptions, json=body, headers=tenant.headers)
            problem = assert_problem(response, 422, field="url")
            assert "address" in problem["errors"][0]["message"], url
        assert await count_rows(db) == 0

    @pytest.mark.parametrize(
        "urls",
        [
            pytest.param(
                ["http://example.com/hook", "HTTP://example.com/hook", "ftp://example.com/hook"],
                id="not-https",
            ),
            pytest.param(
                [
                    "/hook",
                    "example.com/hook",
                    "//example.com/hook",
                    "https://",
                    "https:///hook",
                    "",
                ],
                id="not-absolute",
            ),
            pytest.param(
                [
                    "https://user:pass@example.com/hook",
                    "https://user@example.com/hook",
                    "https://:secret@example.com/hook",
                ],
                id="user-info",
            ),
            pytest.param(
                [
                    "https://example.com:99999/hook",
                    "https://[::1/hook",
                    "https://exa mple.com/hook",
                    "https://example.com/ho\nok",
                ],
                id="malformed",
            ),
        ],
    )
    async def test_malformed_or_unsafe_urls_are_refused(self, client, tenant, db, urls):
        for url in urls:
            response = await client.post(
                tenant.subscriptions, json={**SEED_BODY, "url": url}, headers=tenant.headers
            )
            assert_problem(response, 422, field="url")
        assert await count_rows(db) == 0

    async def test_http_integer_host_of_the_spec_is_refused(self, client, tenant):
        response = await client.post(
            tenant.subscriptions,
            json={**SEED_BODY, "url": "http://2130706433/"},
            headers=tenant.headers,
        )
        assert_problem(response, 422, field="url")

    @pytest.mark.parametrize(
        "url",
        [
            "https://93.184.216.34/hook",
            "https://8.8.8.8:8443/hook?x=1#frag",
            "https://[2606:4700:4700::1111]/hook",
            "https://does-not-exist.invalid/hook",
            "https://hooks.example.com/a/b?c=d",
            "HTTPS://EXAMPLE.COM/Hook",
        ],
    )
    async def test_public_and_unresolvable_targets_are_accepted(self, client, tenant, url):
        created = await create_subscription(client, tenant, url=url)
        assert created["url"] == url

    async def test_url_length_limit_is_2048(self, client, tenant, db):
        base = "https://example.com/"
        longest = base + "a" * (2048 - len(base))
        created = await create_subscription(client, tenant, url=longest)
        assert created["url"] == longest
        response = await client.post(
            tenant.subscriptions, json={**SEED_BODY, "url": longest + "a"}, headers=tenant.headers
        )
        assert_problem(response, 422, field="url")
        assert await count_rows(db) == 1

    async def test_patch_to_an_internal_address_is_refused_and_nothing_changes(
        self, client, tenant
    ):
        created = await create_subscription(client, tenant)
        response = await client.patch(
            tenant.subscription(created["id"]),
            json={"url": "https://[::ffff:127.0.0.1]/hook", "template": "changed"},
            headers=tenant.headers,
        )
        assert_problem(response, 422, field="url")
        got = (await client.get(tenant.subscription(created["id"]), headers=tenant.headers)).json()
        assert got == created | {"signingKey": got["signingKey"]}
        assert got["url"] == "https://example.com/hook" and got["template"] is None


class TestAllowedNetworks:
    @pytest.fixture
    def settings_overrides(self):
        return {"allow_http_targets": False, "allowed_target_networks": "10.0.0.0/8,fd00::/8"}

    @pytest.mark.parametrize(
        "url", ["https://10.1.2.3/hook", "https://[fd00::5]/hook", "https://[::ffff:10.9.9.9]/h"]
    )
    async def test_an_allowed_network_exempts_its_addresses(self, client, tenant, url):
        created = await create_subscription(client, tenant, url=url)
        assert created["url"] == url

    @pytest.mark.parametrize("url", ["https://192.168.0.1/hook", "https://127.0.0.1/hook"])
    async def test_other_internal_addresses_stay_refused(self, client, tenant, url):
        response = await client.post(
            tenant.subscriptions, json={**SEED_BODY, "url": url}, headers=tenant.headers
        )
        assert_problem(response, 422, field="url")


async def test_development_settings_admit_http_and_the_allowed_loopback(client, tenant):
    # The default test settings: VOICEHOOKS_ALLOW_HTTP_TARGETS and 127.0.0.0/8 allowed.
    created = await create_subscription(client, tenant, url="http://127.0.0.1:9/hook")
    assert created["url"] == "http://127.0.0.1:9/hook"
    response = await client.post(
        tenant.subscriptions, json={**SEED_BODY, "url": "http://10.0.0.1/"}, headers=tenant.headers
    )
    assert_problem(response, 422, field="url")


# --- signingKey ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "keys",
    [
        pytest.param(["", "short", "1234567", "x" * 513], id="length"),
        pytest.param(["abcdefgh\n", "abc\tdefgh", "abcdefgh\x00", "\x7fabcdefgh"], id="control"),
    ],
)
async def test_signing_key_must_be_8_to_512_printable_characters(client, tenant, db, keys):
    for key in keys:
        response = await client.post(
            tenant.subscriptions, json={**SEED_BODY, "signingKey": key}, headers=tenant.headers
        )
        assert_problem(response, 422, field="signingKey")
    assert await count_rows(db) == 0


async def test_signing_key_bounds_are_inclusive(client, tenant, db):
    for key in ["12345678", "x" * 512, "with spaces and ünïcode"]:
        created = await create_subscription(
            client, tenant, signingKey=key, eventFilters=[{"key": "channelId", "value": channel()}]
        )
        assert (await stored_signing_keys(db, created["id"]))[0] == key


async def test_signing_key_must_be_a_string(client, tenant):
    response = await client.post(
        tenant.subscriptions, json={**SEED_BODY, "signingKey": 12345678}, headers=tenant.headers
    )
    assert_problem(response, 422, field="signingKey")


# --- at most 5 identical subscriptions ----------------------------------------------------


async def _five_seed_like(client, tenant) -> list[dict]:
    return [
        await create_subscription(
            client,
            tenant,
            url=f"https://example.com/hook/{index}",
            eventFilters=SEED_BODY["eventFilters"],
        )
        for index in range(5)
    ]


async def test_sixth_identical_subscription_is_a_conflict(client, tenant, db):
    await _five_seed_like(client, tenant)
    reordered = list(reversed(SEED_BODY["eventFilters"]))
    for filters in (SEED_BODY["eventFilters"], reordered):
        body = {**SEED_BODY, "url": "https://example.net/other", "eventFilters": filters}
        response = await client.post(tenant.subscriptions, json=body, headers=tenant.headers)
        assert_problem(response, 409)
    assert await count_rows(db) == 5


async def test_a_different_filter_set_or_event_is_not_identical(client, tenant, db):
    await _five_seed_like(client, tenant)
    filters = SEED_BODY["eventFilters"]
    await create_subscription(client, tenant, eventFilters=filters[:2])
    await create_subscription(
        client, tenant, eventFilters=[*filters, {"key": "status", "value": "busy"}]
    )
    await create_subscription(
        client,
        tenant,
        eventFilters=[{"key": "channelId", "value": channel()}, *filters[1:]],
    )
    await create_subscription(client, tenant, event="voice.outbound", eventFilters=filters)
    await create_subscription(client, tenant)
    assert await count_rows(db) == 10


async def test_the_limit_is_per_workspace(client, tenant, database_url):
    await _five_seed_like(client, tenant)
    second = await bootstrap_tenant(database_url, "acme", "second")
    assert second.organization_id == tenant.organization_id
    created = await create_subscription(client, second, eventFilters=SEED_BODY["eventFilters"])
    assert created["workspaceId"] == str(second.workspace_id)


async def test_five_unfiltered_subscriptions_are_the_limit_too(client, tenant):
    for _ in range(5):
        await create_subscription(client, tenant)
    response = await client.post(
        tenant.subscriptions,
        json={"service": "channels", "event": "voice.inbound", "url": "https://example.com/x"},
        headers=tenant.headers,
    )
    assert_problem(response, 409)


async def test_inactive_subscriptions_count_towards_the_limit(client, tenant, db):
    five = await _five_seed_like(client, tenant)
    for subscription in five:
        patched = await client.patch(
            tenant.subscription(subscription["id"]),
            json={"status": "inactive"},
            headers=tenant.headers,
        )
        assert patched.json()["status"] == "inactive"
    response = await client.post(tenant.subscriptions, json=SEED_BODY, headers=tenant.headers)
    assert_problem(response, 409)
    assert await count_rows(db) == 5


async def test_patch_into_a_full_filter_set_is_a_conflict(client, tenant):
    five = await _five_seed_like(client, tenant)
    other = await create_subscription(
        client, tenant, eventFilters=[{"key": "status", "value": "ringing"}]
    )
    response = await client.patch(
        tenant.subscription(other["id"]),
        json={"eventFilters": SEED_BODY["eventFilters"], "template": "changed"},
        headers=tenant.headers,
    )
    assert_problem(response, 409)
    got = (await client.get(tenant.subscription(other["id"]), headers=tenant.headers)).json()
    assert got["eventFilters"] == [{"key": "status", "value": "ringing"}]
    assert got["template"] is None

    # A member of the full set may restate (or reorder) its own filters.
    reordered = list(reversed(SEED_BODY["eventFilters"]))
    response = await client.patch(
        tenant.subscription(five[0]["id"]), json={"eventFilters": reordered}, headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["eventFilters"] == reordered


# --- PATCH --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"url": "https://example.org/new"}, {"url": "https://example.org/new"}),
        ({"signingKey": "a-brand-new-signing-key"}, {"signingKey": "********-key"}),
        ({"status": "inactive"}, {"status": "inactive", "statusReason": None}),
        (
            {"eventFilters": [{"key": "status", "value": "busy"}]},
            {"eventFilters": [{"key": "status", "value": "busy"}]},
        ),
        ({"eventFilters": []}, {"eventFilters": []}),
        ({"template": "{{payload.id}}"}, {"template": "{{payload.id}}"}),
    ],
)
async def test_patch_changes_one_field(client, tenant, change, expected):
    created = (
        await client.post(
            tenant.subscriptions,
            json={**SEED_BODY, "template": None},
            headers=tenant.headers,
        )
    ).json()
    response = await client.patch(
        tenant.subscription(created["id"]), json=change, headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    patched = response.json()
    assert set(patched) == SUBSCRIPTION_FIELDS
    for name, value in expected.items():
        assert patched[name] == value
    untouched = SUBSCRIPTION_FIELDS - set(expected) - {"updatedAt"}
    for name in untouched:
        assert patched[name] == created[name], name
    assert parse_timestamp(patched["updatedAt"]) > parse_timestamp(created["updatedAt"])
    got = await client.get(tenant.subscription(created["id"]), headers=tenant.headers)
    assert got.json() == patched


async def test_patch_signing_key_rotates_the_stored_key(client, tenant, db):
    created = await create_subscription(client, tenant, signingKey="the-old-signing-key")
    response = await client.patch(
        tenant.subscription(created["id"]),
        json={"signingKey": "the-new-signing-key"},
        headers=tenant.headers,
    )
    assert response.json()["signingKey"] == "********-key"
    assert await stored_signing_keys(db, created["id"]) == (
        "the-new-signing-key",
        ["the-old-signing-key"],
    )


async def test_patch_status_back_to_active(client, tenant):
    created = await create_subscription(client, tenant)
    path = tenant.subscription(created["id"])
    await client.patch(path, json={"status": "inactive"}, headers=tenant.headers)
    response = await client.patch(path, json={"status": "active"}, headers=tenant.headers)
    assert response.json()["status"] == "active"
    assert response.json()["statusReason"] is None


async def test_patch_template_to_null_clears_it(client, tenant):
    created = await create_subscription(client, tenant, template="x")
    response = await client.patch(
        tenant.subscription(created["id"]), json={"template": None}, headers=tenant.headers
    )
    assert response.status_code == 200
    assert response.json()["template"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, None),
        ({"event": "voice.outbound"}, "event"),
        ({"service": "channels"}, "service"),
        ({"service": "channels", "template": "x"}, "service"),
        ({"id": str(uuid.uuid4())}, "id"),
        ({"createdAt": "2020-01-01T00:00:00Z"}, "createdAt"),
        ({"url": None}, "url"),
        ({"signingKey": None}, "signingKey"),
        ({"status": None}, "status"),
        ({"status": "paused"}, "status"),
        ({"signingKey": "short"}, "signingKey"),
        ({"url": "ftp://example.com/"}, "url"),
        ({"eventFilters": [{"key": "status", "value": "accepted"}]}, "eventFilters[0].value"),
        (
            {"eventFilters": [{"key": "status", "value": "busy"}, {"key": "x", "value": "y"}]},
            "eventFilters[1].key",
        ),
        (
            {
                "eventFilters": [{"key": "status", "value": "busy"}],
                "url": "https://example.org/new",
                "signingKey": "1",
            },
            "signingKey",
        ),
        (
            {"eventFilters": [{"key": "status", "value": "busy"}], "url": "https://10.0.0.1/"},
            "url",
        ),
        ({"status": "inactive", "template": "a\x00"}, "template"),
    ],
)
async def test_patch_refusals_store_nothing(client, tenant, db, body, field):
    created = await create_subscription(client, tenant, **{**SEED_BODY, "template": "kept"})
    before = dict(await stored(db, created["id"]))
    response = await client.patch(
        tenant.subscription(created["id"]), json=body, headers=tenant.headers
    )
    assert_problem(response, 422, field=field)
    assert dict(await stored(db, created["id"])) == before
    got = (await client.get(tenant.subscription(created["id"]), headers=tenant.headers)).json()
    assert got == created


async def test_patch_with_a_non_object_body_is_refused(client, tenant):
    created = await create_subscription(client, tenant)
    for body in ([], "inactive", None, 1):
        response = await client.patch(
            tenant.subscription(created["id"]), json=body, headers=tenant.headers
        )
        assert_problem(response, 422)


async def test_accepted_status_filter_refused_by_patch_on_inbound_only(client, tenant):
    inbound = await create_subscription(client, tenant)
    outbound = await create_subscription(client, tenant, event="voice.outbound")
    accepted = {"eventFilters": [{"key": "status", "value": "accepted"}]}
    refused = await client.patch(
        tenant.subscription(inbound["id"]), json=accepted, headers=tenant.headers
    )
    assert_problem(refused, 422, field="eventFilters[0].value")
    allowed = await client.patch(
        tenant.subscription(outbound["id"]), json=accepted, headers=tenant.headers
    )
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["eventFilters"] == accepted["eventFilters"]


# --- DELETE -------------------------------------------------------------------------------


async def test_delete_then_gone(client, tenant, db):
    created = await create_subscription(client, tenant)
    kept = await create_subscription(client, tenant, url="https://example.org/kept")
    path = tenant.subscription(created["id"])

    response = await client.delete(path, headers=tenant.headers)
    assert response.status_code == 204
    assert response.content == b""
    assert_problem(await client.get(path, headers=tenant.headers), 404)
    assert_problem(await client.delete(path, headers=tenant.headers), 404)
    assert_problem(await client.patch(path, json={"template": "x"}, headers=tenant.headers), 404)
    listed = (await client.get(tenant.subscriptions, headers=tenant.headers)).json()
    assert [item["id"] for item in listed["results"]] == [kept["id"]]
    assert await stored(db, created["id"]) is None


# --- list ---------------------------------------------------------------------------------


async def _create_many(client, tenant, count: int, **fields) -> list[dict]:
    """Subscriptions with distinct filter sets (one channel each), oldest first."""
    return [
        await create_subscription(
            client,
            tenant,
            url=f"https://example.com/{index}",
            eventFilters=[{"key": "channelId", "value": channel()}],
            **fields,
        )
        for index in range(count)
    ]


async def _pages(client, tenant, **params) -> list[dict]:
    pages = []
    token = None
    for _ in range(100):
        query = dict(params)
        if token is not None:
            query["pageToken"] = token
        response = await client.get(tenant.subscriptions, params=query, headers=tenant.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        token = page.get("nextPageToken")
        if token is None:
            assert "nextPageToken" not in page
            return pages
        assert isinstance(token, str) and token
    raise AssertionError("pagination does not end")


async def test_empty_list(client, tenant):
    response = await client.get(tenant.subscriptions, headers=tenant.headers)
    assert response.status_code == 200
    assert response.json() == {"results": []}


async def test_list_default_limit_is_10_newest_first(client, tenant):
    created = await _create_many(client, tenant, 12)
    page = (await client.get(tenant.subscriptions, headers=tenant.headers)).json()
    assert [item["id"] for item in page["results"]] == [item["id"] for item in created[::-1][:10]]
    assert page["nextPageToken"]
    assert all(set(item) == SUBSCRIPTION_FIELDS for item in page["results"])
    assert page["results"][0] == created[-1] | {"signingKey": page["results"][0]["signingKey"]}


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "1.5", ""])
async def test_list_limit_outside_1_to_100_is_refused(client, tenant, limit):
    response = await client.get(
        tenant.subscriptions, params={"limit": limit}, headers=tenant.headers
    )
    assert_problem(response, 422, field="limit")


async def test_list_limit_bounds_are_inclusive(client, tenant):
    created = await _create_many(client, tenant, 3)
    one = (
        await client.get(tenant.subscriptions, params={"limit": 1}, headers=tenant.headers)
    ).json()
    assert [item["id"] for item in one["results"]] == [created[-1]["id"]]
    assert one["nextPageToken"]
    hundred = await client.get(tenant.subscriptions, params={"limit": 100}, headers=tenant.headers)
    assert len(hundred.json()["results"]) == 3
    assert "nextPageToken" not in hundred.json()


@pytest.mark.parametrize(
    ("count", "limit", "sizes"), [(7, 3, [3, 3, 1]), (4, 2, [2, 2]), (1, 1, [1])]
)
async def test_pages_cover_every_row_once_newest_first(client, tenant, count, limit, sizes):
    created = await _create_many(client, tenant, count)
    pages = await _pages(client, tenant, limit=limit)
    assert [len(page["results"]) for page in pages] == sizes
    ids = [item["id"] for page in pages for item in page["results"]]
    assert ids == [item["id"] for item in reversed(created)]


async def test_pagination_is_stable_when_rows_are_inserted_between_pages(client, tenant):
    created = await _create_many(client, tenant, 5)
    first = (
        await client.get(tenant.subscriptions, params={"limit": 2}, headers=tenant.headers)
    ).json()
    await _create_many(client, tenant, 3, event="voice.outbound")
    seen = [item["id"] for item in first["results"]]
    token = first["nextPageToken"]
    while token:
        page = (
            await client.get(
                tenant.subscriptions,
                params={"limit": 2, "pageToken": token},
                headers=tenant.headers,
            )
        ).json()
        seen += [item["id"] for item in page["results"]]
        token = page.get("nextPageToken")
    assert seen == [item["id"] for item in reversed(created)]


async def test_pagination_is_stable_when_a_listed_row_is_deleted(client, tenant):
    created = await _create_many(client, tenant, 5)
    first = (
        await client.get(tenant.subscriptions, params={"limit": 2}, headers=tenant.headers)
    ).json()
    await client.delete(tenant.subscription(first["results"][-1]["id"]), headers=tenant.headers)
    rest = (
        await client.get(
            tenant.subscriptions,
            params={"limit": 10, "pageToken": first["nextPageToken"]},
            headers=tenant.headers,
        )
    ).json()
    assert [item["id"] for item in rest["results"]] == [item["id"] for item in created[2::-1]]


async def test_list_filters_by_event_and_status(client, tenant):
    inbound = await _create_many(client, tenant, 3)
    outbound = await _create_many(client, tenant, 2, event="voice.outbound")
    await client.patch(
        tenant.subscription(inbound[0]["id"]), json={"status": "inactive"}, headers=tenant.headers
    )
    await client.patch(
        tenant.subscription(outbound[1]["id"]), json={"status": "inactive"}, headers=tenant.headers
    )

    async def ids(**params) -> list[str]:
        pages = await _pages(client, tenant, limit=2, **params)
        return [item["id"] for page in pages for item in page["results"]]

    assert await ids(event="voice.outbound") == [outbound[1]["id"], outbound[0]["id"]]
    assert await ids(event="voice.inbound") == [item["id"] for item in reversed(inbound)]
    assert await ids(status="inactive") == [outbound[1]["id"], inbound[0]["id"]]
    assert await ids(status="active") == [outbound[0]["id"], inbound[2]["id"], inbound[1]["id"]]
    assert await ids(event="voice.inbound", status="inactive") == [inbound[0]["id"]]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"event": "voice.sms"}, "event"), ({"status": "paused"}, "status")],
)
async def test_list_filter_values_are_validated(client, tenant, params, field):
    response = await client.get(tenant.subscriptions, params=params, headers=tenant.headers)
    assert_problem(response, 422, field=field)


def _token(raw: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")


BAD_PAGE_TOKENS = [
    "garbage",
    "!!!!",
    "é",
    "a" * 300,
    _token(None),
    _token({"after": 1}),
    _token(["2024-01-01T00:00:00", str(uuid.uuid4())]),
    _token(["yesterday", str(uuid.uuid4())]),
    _token(["2024-01-01T00:00:00+00:00", "not-a-uuid"]),
    _token([1, 2]),
    base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(),
]


async def test_a_bad_page_token_is_a_client_error(client, tenant):
    await _create_many(client, tenant, 2)
    for token in BAD_PAGE_TOKENS:
        response = await client.get(
            tenant.subscriptions, params={"pageToken": token}, headers=tenant.headers
        )
        assert 400 <= response.status_code < 500, token
        assert_problem(response, response.status_code)


# --- errors and bodies --------------------------------------------------------------------


async def test_validation_problem_shape(client, tenant):
    body = copy.deepcopy(SEED_BODY)
    body["eventFilters"][1]["value"] = "accepted"
    response = await client.post(tenant.subscriptions, json=body, headers=tenant.headers)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert problem["status"] == 422
    assert problem["type"] == "about:blank" or problem["type"].startswith("http")
    assert problem["title"] and problem["detail"]
    assert problem["errors"] == [
        {"field": "eventFilters[1].value", "message": problem["errors"][0]["message"]}
    ]
    assert "voice.inbound" in problem["errors"][0]["message"]


async def test_conflict_and_not_found_are_problems(client, tenant):
    assert_problem(await client.get(tenant.subscription(uuid.uuid4()), headers=tenant.headers), 404)
    await _five_seed_like(client, tenant)
    problem = assert_problem(
        await client.post(tenant.subscriptions, json=SEED_BODY, headers=tenant.headers), 409
    )
    assert "5" in problem["detail"]


async def test_a_body_over_1_mib_is_413(client, tenant, db):
    body = {**SEED_BODY, "template": "x" * (1024 * 1024)}
    response = await client.post(tenant.subscriptions, json=body, headers=tenant.headers)
    assert_problem(response, 413)
    assert await count_rows(db) == 0


async def test_a_streamed_body_over_1_mib_without_length_is_413(client, tenant, db):
    async def chunks():
        yield b'{"service": "channels", "event": "voice.inbound", "template": "'
        for _ in range(17):
            yield b"x" * 65536
        yield b'", "url": "https://example.com/hook"}'

    response = await client.post(
        tenant.subscriptions,
        content=chunks(),
        headers={**tenant.headers, "content-type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413)
    assert await count_rows(db) == 0


async def test_a_body_just_under_1_mib_is_read_and_validated(client, tenant):
    padding = 1024 * 1024 - 1024
    body = {**SEED_BODY, "template": "x" * padding}
    response = await client.post(tenant.subscriptions, json=body, headers=tenant.headers)
    assert len(response.request.content) <= 1024 * 1024
    assert_problem(response, 422, field="template")  # too long a template, not too large a body


async def test_patch_body_over_1_mib_is_413(client, tenant):
    created = await create_subscription(client, tenant)
    response = await client.patch(
        tenant.subscription(created["id"]),
        json={"template": "y" * (1024 * 1024 + 1)},
        headers=tenant.headers,
    )
    assert_problem(response, 413)
    got = (await client.get(tenant.subscription(created["id"]), headers=tenant.headers)).json()
    assert got["template"] is None


@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"service": "channels",}', b"not json", b"\xff\xfe", b'{"a": 1} trailing', b""],
)
async def test_malformed_json_is_a_problem(client, tenant, db, raw):
    response = await client.post(
        tenant.subscriptions,
        content=raw,
        headers={**tenant.headers, "content-type": "application/json"},
    )
    assert 400 <= response.status_code < 500
    assert_problem(response, response.status_code)
    assert await count_rows(db) == 0


async def test_malformed_json_patch_is_a_problem(client, tenant):
    created = await create_subscription(client, tenant)
    response = await client.patch(
        tenant.subscription(created["id"]),
        content=b'{"template": ',
        headers={**tenant.headers, "content-type": "application/json"},
    )
    assert 400 <= response.status_code < 500
    assert_problem(response, response.status_code)
