"""SPEC §6 over HTTP: portal links, the one-time exchange, sessions, CSRF, headers, isolation."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.operations_helpers import ingest
from tests.portal_helpers import (
    portal_link,
    portal_sessions_path,
    post_form,
    same_origin,
    signed_in,
)
from tests.subscriptions_helpers import assert_problem
from tests.support import call_event, create_subscription

CSP_START = "default-src 'self'; script-src 'self'; style-src 'self'"


async def test_a_link_is_one_time_hashed_and_expires_when_asked(client, tenant, db):
    before = datetime.now(UTC)
    response = await client.post(
        portal_sessions_path(tenant), json={"expiresIn": 600}, headers=tenant.headers
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"url", "expiresAt"}
    assert body["url"].startswith("http://127.0.0.1:8000/portal/enter?token=")
    token = body["url"].split("token=", 1)[1]
    assert len(token) >= 22  # at least 128 random bits, base64url
    expires_at = datetime.fromisoformat(body["expiresAt"])
    assert before + timedelta(seconds=595) <= expires_at <= before + timedelta(seconds=605)
    stored = await db.fetch("SELECT link_hash, cookie_hash FROM portal_sessions")
    assert len(stored) == 1 and token.encode() not in stored[0]["link_hash"]

    first = await client.get(f"/portal/enter?token={token}")
    assert first.status_code == 303 and first.headers["location"] == "/portal/"
    cookie = first.headers["set-cookie"]
    for flag in ("HttpOnly", "SameSite=strict", "Path=/portal", "Max-Age="):
        assert flag.lower() in cookie.lower(), cookie
    assert "secure" not in cookie.lower()  # the public URL is http here

    client.cookies.clear()
    again = await client.get(f"/portal/enter?token={token}")
    assert again.status_code == 401
    assert "used already" in again.text
    assert "set-cookie" not in again.headers


async def test_an_empty_body_gives_an_hour_long_read_write_session(client, tenant):
    response = await client.post(portal_sessions_path(tenant), headers=tenant.headers)
    assert response.status_code == 201, response.text
    expires_at = datetime.fromisoformat(response.json()["expiresAt"])
    assert abs((expires_at - datetime.now(UTC)) - timedelta(hours=1)) < timedelta(seconds=10)


@pytest.mark.parametrize("body", [{"expiresIn": 59}, {"expiresIn": 86401}, {"readOnly": "maybe"}])
async def test_bad_bodies_are_422(client, tenant, body):
    response = await client.post(portal_sessions_path(tenant), json=body, headers=tenant.headers)
    assert_problem(response, 422)


async def test_auth_and_foreign_ids_answer_like_the_api(client, tenant, other_tenant):
    path = portal_sessions_path(tenant)
    assert_problem(await client.post(path), 401)
    assert_problem(await client.post(path, headers=other_tenant.headers), 404)
    foreign = await create_subscription(client, other_tenant)
    for subscription_id in (foreign["id"], str(uuid.uuid4())):
        response = await client.post(
            path, json={"subscriptionId": subscription_id}, headers=tenant.headers
        )
        assert_problem(response, 404)


async def test_unknown_and_expired_tokens_are_refused_without_a_cookie(client, tenant, db):
    unknown = await client.get("/portal/enter?token=not-a-token-of-ours")
    assert unknown.status_code == 401 and "set-cookie" not in unknown.headers
    assert (await client.get("/portal/enter")).status_code == 401
    link = await portal_link(client, tenant)
    await db.execute("UPDATE portal_sessions SET expires_at = now() - interval '1 second'")
    expired = await client.get(link)
    assert expired.status_code == 401 and "set-cookie" not in expired.headers
    assert "expired" in expired.text


async def test_a_session_ends_at_the_links_expiry(client, tenant, db):
    await signed_in(client, tenant)
    assert (await client.get("/portal/subscriptions")).status_code == 200
    await db.execute("UPDATE portal_sessions SET expires_at = now() - interval '1 second'")
    ended = await client.get("/portal/subscriptions")
    assert ended.status_code == 401
    assert "session has ended" in ended.text


async def test_every_portal_answer_has_the_security_headers(client, tenant):
    refused = await client.get("/portal/")
    await signed_in(client, tenant)
    answers = [
        refused,
        await client.get("/portal/"),
        await client.get("/portal/static/portal.css"),
        await client.get("/portal/no-such-page"),
        await client.get(f"/portal/subscriptions/{uuid.uuid4()}"),
        await client.post("/portal/subscriptions", data={}),
    ]
    for answer in answers:
        policy = answer.headers["content-security-policy"]
        assert policy.startswith(CSP_START), policy
        assert "frame-ancestors 'none'" in policy
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert [answer.status_code for answer in answers] == [401, 200, 200, 404, 404, 403]


@pytest.mark.parametrize(
    "settings_overrides", [{"portal_frame_ancestors": "https://app.example.com"}]
)
async def test_frame_ancestors_come_from_the_setting(client, tenant, settings_overrides):
    page = await client.get("/portal/enter?token=x")
    assert "frame-ancestors https://app.example.com;" in page.headers["content-security-policy"]


async def test_a_change_needs_the_csrf_token_and_the_portals_origin(client, tenant, db):
    csrf = await signed_in(client, tenant)
    fields = {"event": "voice.inbound", "url": "https://example.com/hook"}
    without = await post_form(client, "/portal/subscriptions", fields)
    wrong = await post_form(client, "/portal/subscriptions", {**fields, "csrf_token": "x" * 43})
    cross_site = await client.post(
        "/portal/subscriptions",
        data={**fields, "csrf_token": csrf},
        headers={"Origin": "https://attacker.example", "Sec-Fetch-Site": "cross-site"},
    )
    null_cross_site = await client.post(
        "/portal/subscriptions",
        data={**fields, "csrf_token": csrf},
        headers={"Origin": "null", "Sec-Fetch-Site": "cross-site"},
    )
    for refused in (without, wrong, cross_site, null_cross_site):
        assert refused.status_code == 403, refused.text
    assert await db.fetchval("SELECT count(*) FROM subscriptions") == 0

    accepted = await post_form(client, "/portal/subscriptions", {**fields, "csrf_token": csrf})
    assert accepted.status_code == 200, accepted.text  # the generated key, shown once
    assert await db.fetchval("SELECT count(*) FROM subscriptions") == 1


async def test_a_read_only_session_changes_nothing(client, tenant, db):
    subscription = await create_subscription(client, tenant)
    csrf = await signed_in(client, tenant, readOnly=True)
    page = await client.get(f"/portal/subscriptions/{subscription['id']}")
    assert page.status_code == 200
    for action in ("Rotate key", "Disable", "Send test event", "Delete"):
        assert action not in page.text
    for path, fields in [
        ("/portal/subscriptions", {"event": "voice.inbound", "url": "https://example.com/x"}),
        (f"/portal/subscriptions/{subscription['id']}/status", {"status": "inactive"}),
        (f"/portal/subscriptions/{subscription['id']}/delete", {}),
        (f"/portal/subscriptions/{subscription['id']}/rotate-key", {}),
    ]:
        refused = await post_form(client, path, {**fields, "csrf_token": csrf})
        assert refused.status_code == 403, (path, refused.text)
    rows = await db.fetch("SELECT status FROM subscriptions")
    assert [row["status"] for row in rows] == ["active"]


async def test_a_session_sees_only_its_workspace(client, tenant, other_tenant, db):
    mine = await create_subscription(client, tenant, url="https://example.com/mine")
    theirs = await create_subscription(client, other_tenant, url="https://example.com/theirs")
    await ingest(client, call_event(other_tenant.workspace_id, call_id="their-call"))
    their_delivery = await db.fetchval("SELECT id FROM deliveries")
    csrf = await signed_in(client, tenant)
    listing = await client.get("/portal/subscriptions")
    assert "example.com/mine" in listing.text and "example.com/theirs" not in listing.text
    for path in (
        f"/portal/subscriptions/{theirs['id']}",
        f"/portal/subscriptions/{theirs['id']}/verify",
        f"/portal/deliveries?subscription={theirs['id']}",
        f"/portal/deliveries/{uuid.uuid4()}",
        f"/portal/deliveries/{their_delivery}",
        f"/portal/deliveries/{their_delivery}/attempts",
        "/portal/subscriptions/not-a-uuid",
    ):
        assert (await client.get(path)).status_code == 404, path
    search = await client.get("/portal/deliveries?q=their-call")
    assert search.status_code == 200 and "No deliveries match" in search.text
    retried = await post_form(
        client, f"/portal/deliveries/{their_delivery}/retry", {"csrf_token": csrf}
    )
    assert retried.status_code == 404
    posted = await post_form(
        client,
        f"/portal/subscriptions/{theirs['id']}/status",
        {"status": "inactive", "csrf_token": csrf},
    )
    assert posted.status_code == 404
    assert (await client.get(f"/portal/subscriptions/{mine['id']}")).status_code == 200


async def test_a_subscription_session_sees_that_subscription_only(client, tenant):
    one = await create_subscription(client, tenant, url="https://example.com/one")
    two = await create_subscription(client, tenant, url="https://example.com/two")
    await signed_in(client, tenant, subscriptionId=one["id"])
    listing = await client.get("/portal/subscriptions")
    assert "example.com/one" in listing.text and "example.com/two" not in listing.text
    assert "New subscription" not in listing.text
    assert (await client.get(f"/portal/subscriptions/{two['id']}")).status_code == 404
    assert (await client.get(f"/portal/subscriptions/{one['id']}")).status_code == 200


async def test_bad_filters_are_a_clear_4xx(client, tenant):
    await signed_in(client, tenant)
    for query in (
        "state=lost",
        "since=yesterday",
        "after=garbage",
        "subscription=nope",
        "q=" + "x" * 300,
        "until=9999-12-31T23:59:59&until_offset=1439",
    ):
        answer = await client.get(f"/portal/deliveries?{query}")
        assert 400 <= answer.status_code < 500, (query, answer.status_code)
    assert (await client.get("/portal/subscriptions?page=garbage")).status_code == 422


@pytest.mark.parametrize("settings_overrides", [{"public_url": "https://hooks.example.com/"}])
async def test_an_https_public_url_makes_the_cookie_secure(client, tenant, settings_overrides):
    response = await client.post(portal_sessions_path(tenant), headers=tenant.headers)
    url = response.json()["url"]
    assert url.startswith("https://hooks.example.com/portal/enter?token=")
    entered = await client.get("/portal/enter?" + url.split("?", 1)[1])
    assert entered.status_code == 303
    assert "secure" in entered.headers["set-cookie"].lower()


async def test_portal_without_a_slash_leads_to_the_overview(client):
    answer = await client.get("/portal")
    assert answer.status_code == 303 and answer.headers["location"] == "/portal/"


NASTY = [
    "",
    "\x00",
    "💥" * 300,
    "x" * 70_000,
    "'; DROP TABLE deliveries; --",
    "-1",
    "9" * 40,
]


async def test_no_input_makes_a_page_fail_with_a_5xx(client, tenant):
    subscription = await create_subscription(client, tenant, url="https://example.com/n")
    csrf = await signed_in(client, tenant)
    base = f"/portal/subscriptions/{subscription['id']}"
    forms = {
        "/portal/subscriptions": ("event", "url", "signing_key", "channel_id", "statuses"),
        f"{base}/edit": ("url", "channel_id", "statuses"),
        f"{base}/status": ("status",),
        f"{base}/rotate-key": ("signing_key",),
        f"{base}/recover": ("since", "since_offset"),
    }
    for path, names in forms.items():
        for value in NASTY:
            fields = {name: value for name in names}
            answer = await post_form(client, path, {**fields, "csrf_token": csrf})
            assert answer.status_code < 500, (path, value[:20], answer.text[:300])
    # Bytes that are not UTF-8, as a client may send them.
    raw = f"url=%ff%fe&statuses=%c3&csrf_token={csrf}".encode()
    answer = await client.post(
        "/portal/subscriptions",
        content=raw,
        headers={**same_origin(client), "content-type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code < 500, answer.text[:300]
    assert (await client.get("/portal/deliveries?q=%ff%fe")).status_code < 500
    for value in (value for value in NASTY if len(value) < 4000):  # URLs stay short
        for name in ("q", "state", "since", "until", "since_offset", "after", "subscription"):
            answer = await client.get("/portal/deliveries", params={name: value})
            assert answer.status_code < 500, (name, value[:20])
        answer = await client.get("/portal/subscriptions", params={"page": value})
        assert answer.status_code < 500, value[:20]
