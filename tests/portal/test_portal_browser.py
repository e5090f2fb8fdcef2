"""The customer portal in a real browser: Chromium driven by Playwright, against a real
`voicehooks serve` (API and dispatcher) delivering to a real receiver on 127.0.0.1."""

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from tests.operations_helpers import (
    free_port,
    run_command,
    run_voicehooks,
    running,
    service_environment,
    signature_entries,
    standard_verifies,
    wait_for_readyz,
)
from tests.portal_helpers import CHROMIUM_FLAGS, chromium_path, portal_sessions_path
from tests.support import Reply, Tenant, bootstrap_tenant, call_event, wait_until

INGEST_TOKEN = "portal-test-ingest-token-0123456789"
TIMEOUT_MS = 15_000
PHONE = {"width": 390, "height": 844}


@dataclass
class Service:
    base_url: str
    http: httpx.AsyncClient
    log_path: Path
    env: dict[str, str]

    async def link(self, tenant: Tenant, **body: object) -> str:
        response = await self.http.post(
            portal_sessions_path(tenant), json=body, headers=tenant.headers
        )
        assert response.status_code == 201, response.text
        url: str = response.json()["url"]
        assert url.startswith(self.base_url + "/portal/enter?token=")
        return url

    async def ingest(self, tenant: Tenant, **fields: object) -> dict[str, object]:
        response = await self.http.post(
            "/internal/v1/events",
            json=call_event(tenant.workspace_id, **fields),  # type: ignore[arg-type]
            headers={"Authorization": f"Bearer {INGEST_TOKEN}"},
        )
        assert response.status_code == 202, response.text
        result: dict[str, object] = response.json()
        return result


@pytest.fixture(scope="module")
async def service(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Service]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = service_environment(
        database_url, VOICEHOOKS_INGEST_TOKEN=INGEST_TOKEN, VOICEHOOKS_PUBLIC_URL=base_url
    )
    log_path = tmp_path_factory.mktemp("portal-service") / "serve.log"
    async with (
        running(env, log_path, "serve", "--port", str(port)),
        httpx.AsyncClient(base_url=base_url, timeout=30) as http,
    ):
        await wait_for_readyz(http)
        yield Service(base_url, http, log_path, env)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_FLAGS
        )
        yield launched
        await launched.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every page, as a person sees it: in the run's temporary folder (pytest prints it)."""
    return tmp_path_factory.mktemp("portal-screenshots")


@pytest.fixture
async def context(browser: Browser, service: Service) -> AsyncIterator[BrowserContext]:
    opened = await browser.new_context(
        base_url=service.base_url,
        timezone_id="Europe/Amsterdam",
        locale="en-GB",
        viewport={"width": 1280, "height": 900},
    )
    opened.set_default_timeout(TIMEOUT_MS)
    yield opened
    await opened.close()


@pytest.fixture
async def page(context: BrowserContext) -> AsyncIterator[Page]:
    """A tab; after the test, no script error and nothing the CSP refused (inline code)."""
    opened = await context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    opened.on(
        "console",
        lambda message: (
            problems.append(message.text)
            if message.type == "error" and "Content Security Policy" in message.text
            else None
        ),
    )
    yield opened
    assert problems == []


@pytest.fixture
async def tenant(database_url: str, db) -> Tenant:  # type: ignore[no-untyped-def]
    return await bootstrap_tenant(database_url, "acme", "main")


def nav(page: Page, name: str):  # type: ignore[no-untyped-def]
    return page.get_by_role("navigation", name="Portal").get_by_role("link", name=name)


async def shoot(page: Page, folder: Path, name: str) -> None:
    await page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


async def create_through_form(
    page: Page, *, url: str, event: str = "voice.inbound", key: str = "", statuses: tuple = ()
) -> None:
    await nav(page, "Subscriptions").click()
    await page.get_by_role("link", name="New subscription").first.click()
    await page.get_by_label("Event").select_option(event)
    await page.get_by_label("URL").fill(url)
    if key:
        await page.get_by_label("Signing key").fill(key)
    for status in statuses:
        await page.locator(f"input[name=statuses][value={status}]").check()
    await page.get_by_role("button", name="Create subscription").click()


async def open_portal(page: Page, service: Service, tenant: Tenant, **body: object) -> str:
    link = await service.link(tenant, **body)
    await page.goto(link)
    await expect(page).to_have_url(service.base_url + "/portal/")
    return link


async def delivery_rows(page: Page) -> int:
    return await page.locator("#deliveries tbody tr").count()


# -- entering -----------------------------------------------------------------------------------


async def test_a_link_opens_the_portal_once_and_the_token_leaves_the_url(
    service, page, context, tenant, database_url, db
):
    other = await bootstrap_tenant(database_url, "globex", "main")
    theirs = await service.http.post(
        other.subscriptions,
        json={"service": "channels", "event": "voice.inbound", "url": "https://example.com/x"},
        headers=other.headers,
    )
    link = await open_portal(page, service, tenant)
    assert "token" not in page.url
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    cookies = await context.cookies()
    assert [(c["name"], c["httpOnly"], c["sameSite"], c["path"]) for c in cookies] == [
        ("voicehooks_portal", True, "Strict", "/portal")
    ]

    # Another workspace's ids are not found, as in the API.
    answer = await page.goto(f"/portal/subscriptions/{theirs.json()['id']}")
    assert answer is not None and answer.status == 404
    await expect(page.get_by_role("heading", name="Not found")).to_be_visible()

    # The link works once, even in another browser.
    await context.clear_cookies()
    answer = await page.goto(link)
    assert answer is not None and answer.status == 401
    await expect(page.get_by_text("used already")).to_be_visible()
    assert await context.cookies() == []

    expired = await service.link(tenant, expiresIn=60)
    await db.execute("UPDATE portal_sessions SET expires_at = now() WHERE entered_at IS NULL")
    answer = await page.goto(expired)
    assert answer is not None and answer.status == 401
    await expect(
        page.get_by_role("heading", name="This link does not open the portal")
    ).to_be_visible()


async def test_portal_link_prints_one_link_for_an_operator(service, page, tenant, db):
    stdout, _ = await run_command(
        service.env, "portal-link", "--organization", "acme", "--workspace", "main", "--read-only"
    )
    assert stdout.count("\n") == 1
    link = stdout.strip()
    assert link.startswith(service.base_url + "/portal/enter?token=")
    await page.goto(link)
    await expect(page.get_by_text("read-only")).to_be_visible()

    code, stdout, stderr = await run_voicehooks(
        service.env, "portal-link", "--organization", "nobody", timeout=90
    )
    assert code == 1 and stdout == "" and "no organization named 'nobody'" in stderr


# -- a subscription, its deliveries, replay -----------------------------------------------------


async def test_create_deliver_inspect_and_retry(service, page, tenant, receiver, screenshots):
    await open_portal(page, service, tenant)
    await shoot(page, screenshots, "overview-empty")

    # The form applies the API's rules, with the API's messages, next to the fields.
    await create_through_form(page, url=f"{receiver.url}/hook", statuses=("accepted",))
    await expect(page.get_by_text("Please correct the fields marked below.")).to_be_visible()
    await expect(page.locator("#statuses-error")).to_contain_text(
        "not a call status of voice.inbound"
    )
    await shoot(page, screenshots, "subscription-form-errors")
    await page.locator("input[name=statuses][value=accepted]").uncheck()
    await page.locator("input[name=statuses][value=ringing]").check()
    await page.get_by_label("URL").fill("ftp://example.com/hook")
    await page.get_by_role("button", name="Create subscription").click()
    await expect(page.locator("#url-error")).to_contain_text("http")
    await expect(page.locator("#statuses-error")).to_have_count(0)

    await page.get_by_label("URL").fill(f"{receiver.url}/hook")
    await page.get_by_role("button", name="Create subscription").click()
    await expect(page.get_by_role("heading", name="Subscription created")).to_be_visible()
    key = (await page.locator("#revealed-key").inner_text()).strip()
    assert len(key) >= 32
    await expect(page.locator("#code-python")).to_contain_text(key)
    await shoot(page, screenshots, "key-shown-once")
    await page.get_by_role("link", name="Go to the subscription →").click()
    await expect(page.locator("#masked-key")).to_have_text("********" + key[-4:])
    await expect(page.get_by_text(key)).to_have_count(0)  # shown once, never again

    # A call event arrives: its delivery is listed, and its page shows the attempt.
    receiver.reply(Reply(200, body="thanks"))
    await service.ingest(tenant, call_id="call-portal-1", status="ringing")
    await wait_until(lambda: receiver.to("/hook"), timeout=10)
    await nav(page, "Deliveries").click()
    await expect(page.locator("#deliveries tbody tr")).to_have_count(1)
    await expect(page.locator("#deliveries")).to_contain_text("call-portal-1")
    await shoot(page, screenshots, "deliveries")
    await page.locator("#deliveries tbody tr a").first.click()
    attempts = page.locator("li.attempt")
    await expect(attempts).to_have_count(1)
    await expect(attempts.first).to_contain_text("HTTP 200")
    await expect(attempts.first).to_contain_text("thanks")
    await expect(page.locator("#event-body")).to_contain_text('"id": "call-portal-1"')

    # The body shown is the one the receiver got, byte for byte.
    raw = await page.locator("#event-body-raw").text_content()
    assert raw == receiver.to("/hook")[0].body.decode()

    # Retry: one more attempt, shown as it happens.
    await page.get_by_role("button", name="Retry").click()
    await expect(page.get_by_text("One more attempt is on its way.")).to_be_visible()
    await expect(attempts).to_have_count(2)
    await expect(attempts.first).to_contain_text("Attempt 2")
    await expect(page.locator("#delivery-state")).to_contain_text("succeeded")
    assert len(receiver.to("/hook")) == 2
    await page.locator("li.attempt details").first.locator("summary").click()
    # The request headers as sent: the signatures the receiver got, for each attempt.
    sent = receiver.to("/hook")[1]
    shown = page.locator("li.attempt").first.locator("details table")
    for name in ("webhook-signature", "messagebird-signature", "webhook-id", "webhook-timestamp"):
        row = shown.locator("tr", has=page.locator("th", has_text=name))
        await expect(row.locator("td")).to_have_text(sent.headers[name])
    await shoot(page, screenshots, "delivery")

    # Times are the browser's (Amsterdam here), with UTC on hover.
    stamp = page.locator("li.attempt time").first
    assert (await stamp.get_attribute("title") or "").endswith(" UTC")
    assert "UTC" not in await stamp.inner_text()

    # The overview counts it and charts it.
    await nav(page, "Overview").click()
    await expect(page.locator("#stat-deliveries")).to_have_text("1")
    await expect(page.locator("#deliveries-chart rect.bar-succeeded")).to_have_count(1)
    await expect(page.locator("#latency-chart circle.dot-p50")).to_have_count(1)
    await shoot(page, screenshots, "overview")

    await page.set_viewport_size(PHONE)
    await nav(page, "Deliveries").click()
    await expect(page.locator("#deliveries tbody tr")).to_have_count(1)
    await shoot(page, screenshots, "deliveries-phone")


async def test_search_and_filter_deliveries(service, page, tenant, receiver):
    await open_portal(page, service, tenant)
    created = await service.http.post(
        tenant.subscriptions,
        json={"service": "channels", "event": "voice.inbound", "url": f"{receiver.url}/a"},
        headers=tenant.headers,
    )
    assert created.status_code == 201
    first = await service.ingest(tenant, call_id="call-alpha", client_id="evt-alpha")
    await service.ingest(tenant, call_id="call-beta")
    await wait_until(lambda: len(receiver.requests) == 2, timeout=10)

    await page.goto("/portal/deliveries")
    await expect(page.locator("#deliveries tbody tr")).to_have_count(2)
    for search in ("call-alpha", "evt-alpha", str(first["id"])):
        await page.get_by_label("Call id or event id").fill(search)
        await page.get_by_role("button", name="Filter").click()
        await expect(page.locator("#deliveries tbody tr")).to_have_count(1)
        await expect(page.locator("#deliveries")).to_contain_text("call-alpha")
    await page.get_by_label("Call id or event id").fill("")
    await page.get_by_label("State").select_option("failed")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_role("heading", name="No deliveries match")).to_be_visible()
    await page.get_by_label("State").select_option("")
    await page.get_by_label("Until").fill("2020-01-01T00:00:00")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_role("heading", name="No deliveries match")).to_be_visible()


async def test_recover_failed_deliveries_since_a_time(service, page, tenant, receiver):
    receiver.reply(Reply(500, body="down"))
    created = await service.http.post(
        tenant.subscriptions,
        json={"service": "channels", "event": "voice.inbound", "url": f"{receiver.url}/r"},
        headers=tenant.headers,
    )
    subscription_id = created.json()["id"]
    await service.ingest(tenant, call_id="call-recover")
    await wait_until(lambda: len(receiver.requests) == 4, timeout=15)  # 1 + 3 retries

    await open_portal(page, service, tenant)
    await page.goto(f"/portal/deliveries?subscription={subscription_id}&state=failed")
    await expect(page.locator("#deliveries tbody tr")).to_have_count(1)

    receiver.reply(Reply(200))
    await page.goto(f"/portal/subscriptions/{subscription_id}")
    await page.get_by_label("Since").fill("2020-01-01T00:00:00")
    await page.get_by_role("button", name="Recover").click()
    await expect(page.get_by_text("1 failed deliveries were queued again.")).to_be_visible()
    await wait_until(lambda: len(receiver.requests) == 5, timeout=10)
    await page.get_by_role("link", name="All deliveries of this subscription →").click()
    await page.locator("#deliveries tbody tr a").first.click()
    await expect(page.locator("li.attempt")).to_have_count(5)
    await expect(page.locator("#delivery-state")).to_contain_text("succeeded")


async def test_rotate_key_test_event_and_the_verifying_code(
    service, page, tenant, receiver, screenshots
):
    await open_portal(page, service, tenant)
    await create_through_form(page, url=f"{receiver.url}/v", key="my-first-signing-key")
    await expect(page.get_by_text("Saved.")).to_be_visible()
    await page.get_by_role("link", name="How to verify deliveries").click()
    await expect(page.locator("#code-python")).to_contain_text('SIGNING_KEY = "YOUR_SIGNING_KEY"')
    await shoot(page, screenshots, "verify")
    await page.go_back()

    await page.get_by_role("button", name="Rotate key").click()
    await expect(page.get_by_role("heading", name="Signing key rotated")).to_be_visible()
    new_key = (await page.locator("#revealed-key").inner_text()).strip()
    python_code = await page.locator("#code-python").text_content()
    bird_code = await page.locator("#code-bird").text_content()
    await page.get_by_role("link", name="Go to the subscription →").click()

    await page.get_by_role("button", name="Send test event").click()
    await expect(page.get_by_role("heading", name=re.compile("^Delivery"))).to_be_visible()
    await expect(page.locator("#delivery-state")).to_contain_text("succeeded")
    received = receiver.to("/v")[-1]
    assert received.json()["payload"]["test"] is True
    # Both keys sign during the overlap; the new one is what the page handed out.
    assert len(signature_entries(received)) == 2
    assert standard_verifies(new_key, received)
    assert standard_verifies("my-first-signing-key", received)

    # The code on the page, run as a receiver would, accepts the delivery.
    scope: dict[str, object] = {}
    exec(python_code or "", scope)
    event = scope["verify"](received.body, received.headers)  # type: ignore[operator]
    assert event["payload"]["test"] is True
    scope = {}
    exec(bird_code or "", scope)
    assert scope["verify_bird"](received.body, received.headers) is True  # type: ignore[operator]


async def test_enable_disable_and_delete(service, page, tenant, receiver, db, screenshots):
    await open_portal(page, service, tenant)
    await create_through_form(page, url=f"{receiver.url}/d", key="a-key-for-deleting")
    await page.get_by_role("button", name="Disable").click()
    await expect(page.get_by_text("The subscription is inactive")).to_be_visible()
    await shoot(page, screenshots, "subscription")
    await expect(page.get_by_role("button", name="Send test event")).to_be_disabled()
    await page.get_by_role("button", name="Enable").click()
    await expect(page.get_by_text("The subscription is active again.")).to_be_visible()
    await page.get_by_role("link", name="Delete…").click()
    await page.get_by_role("button", name="Delete subscription").click()
    await expect(page.get_by_text("The subscription was deleted.")).to_be_visible()
    await expect(page.get_by_role("heading", name="No subscriptions yet")).to_be_visible()
    assert await db.fetchval("SELECT count(*) FROM subscriptions") == 0


# -- safe by construction -----------------------------------------------------------------------


async def test_a_read_only_session_has_no_buttons_and_a_forged_post_is_refused(
    service, page, tenant, receiver, db
):
    created = await service.http.post(
        tenant.subscriptions,
        json={"service": "channels", "event": "voice.inbound", "url": f"{receiver.url}/ro"},
        headers=tenant.headers,
    )
    subscription_id = created.json()["id"]
    await open_portal(page, service, tenant, readOnly=True)
    await page.goto(f"/portal/subscriptions/{subscription_id}")
    await expect(page.get_by_text("read-only")).to_be_visible()
    for name in ("Rotate key", "Disable", "Send test event", "Recover"):
        await expect(page.get_by_role("button", name=name)).to_have_count(0)
    await expect(page.get_by_role("link", name="Delete…")).to_have_count(0)

    csrf = await page.locator("input[name=csrf_token]").first.get_attribute("value")
    forged = await page.request.post(
        f"/portal/subscriptions/{subscription_id}/status",
        form={"status": "inactive", "csrf_token": csrf or ""},
        headers={"Origin": service.base_url},
    )
    assert forged.status == 403
    assert await db.fetchval("SELECT status FROM subscriptions") == "active"


async def test_a_post_without_the_csrf_token_is_refused(service, page, tenant, receiver, db):
    created = await service.http.post(
        tenant.subscriptions,
        json={"service": "channels", "event": "voice.inbound", "url": f"{receiver.url}/c"},
        headers=tenant.headers,
    )
    subscription_id = created.json()["id"]
    await open_portal(page, service, tenant)
    forged = await page.request.post(
        f"/portal/subscriptions/{subscription_id}/status",
        form={"status": "inactive"},
        headers={"Origin": service.base_url},
    )
    assert forged.status == 403
    assert "not sent from this portal session" in await forged.text()
    assert await db.fetchval("SELECT status FROM subscriptions") == "active"


async def test_what_a_receiver_answers_is_shown_as_text_and_never_runs(
    service, page, tenant, receiver
):
    attack = '<script>window.pwned = 1</script><img src="x" onerror="window.pwned = 2">'
    receiver.reply(Reply(200, body=attack, headers={"content-type": "text/html"}))
    created = await service.http.post(
        tenant.subscriptions,
        json={"service": "channels", "event": "voice.inbound", "url": f"{receiver.url}/x"},
        headers=tenant.headers,
    )
    assert created.status_code == 201
    await service.ingest(tenant, call_id="<b>call</b>")
    await wait_until(lambda: receiver.requests, timeout=10)

    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await open_portal(page, service, tenant)
    await page.goto("/portal/deliveries")
    await expect(page.locator("#deliveries")).to_contain_text("<b>call</b>")
    await page.locator("#deliveries tbody tr a").first.click()
    await expect(page.locator("pre.response-body")).to_have_text(attack)
    assert await page.evaluate("window.pwned") is None
    assert await page.locator("li.attempt img, li.attempt script").count() == 0
    assert dialogs == []


async def test_every_page_for_the_screenshots_and_no_secret_in_the_logs(
    service, page, tenant, receiver, screenshots
):
    link = await open_portal(page, service, tenant)
    for name, path in (
        ("subscriptions", "/portal/subscriptions"),
        ("new-subscription", "/portal/subscriptions/new"),
        ("events", "/portal/events"),
        ("deliveries-empty", "/portal/deliveries"),
    ):
        await page.goto(path)
        await shoot(page, screenshots, name)
    await expect(page.get_by_text("No deliveries yet — send a test event")).to_be_visible()
    cookie = (await page.context.cookies())[0]["value"]
    token = link.split("token=", 1)[1]

    async def logged() -> bool:
        return "/portal/events" in service.log_path.read_text()

    await wait_until(logged, timeout=10)
    lines = [json.loads(line) for line in service.log_path.read_text().splitlines() if line]
    text = service.log_path.read_text()
    assert token not in text and cookie not in text
    entered = [line for line in lines if line.get("path") == "/portal/enter"]
    assert entered and all("token" not in json.dumps(line) for line in entered)


async def test_the_overview_charts_a_day_of_deliveries(
    service, page, tenant, receiver, db, screenshots
):
    receiver.reply(Reply(500, body="maintenance"), path="/down")
    for path in ("/up", "/down"):
        created = await service.http.post(
            tenant.subscriptions,
            json={"service": "channels", "event": "voice.inbound", "url": receiver.url + path},
            headers=tenant.headers,
        )
        assert created.status_code == 201
    for hour in range(24):
        for call in range(1 + hour % 4):
            await service.ingest(tenant, call_id=f"call-{hour}-{call}")
    events = sum(1 + hour % 4 for hour in range(24))

    async def settled() -> bool:
        finished = await db.fetchval("SELECT count(*) FROM deliveries WHERE state <> 'pending'")
        return finished == 2 * events

    await wait_until(settled, timeout=60, interval=0.2)
    # A day passes: each call's deliveries and attempts move into the hour its id names.
    for table, column in (("deliveries", "id"), ("attempts", "delivery_id")):
        await db.execute(
            f"""UPDATE {table} t SET created_at =
                    date_trunc('hour', now()) - make_interval(hours => 23 - h.hour, secs => -1)
                FROM (SELECT d.id, split_part(d.call_id, '-', 2)::int AS hour
                      FROM deliveries d) AS h
                WHERE t.{column} = h.id"""
        )

    await open_portal(page, service, tenant)
    await expect(page.locator("#stat-deliveries")).to_have_text(str(2 * events))
    bars = page.locator("#deliveries-chart rect")
    await expect(page.locator("#deliveries-chart rect.bar-succeeded")).to_have_count(24)
    await expect(page.locator("#deliveries-chart rect.bar-failed")).to_have_count(24)
    assert await bars.count() == 48
    await expect(page.locator("#latency-chart circle.dot-p95")).to_have_count(24)
    failing = page.get_by_role("heading", name="Subscriptions that are failing").locator("..")
    await expect(failing).to_contain_text(receiver.url + "/down")
    await expect(failing).not_to_contain_text(receiver.url + "/up")
    await shoot(page, screenshots, "overview-day")
