"""Helpers of the portal tests: links, sessions, forms posted as a browser posts them."""

import re
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.support import Tenant

CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def portal_sessions_path(tenant: Tenant) -> str:
    return (
        f"/organizations/{tenant.organization_id}/workspaces/{tenant.workspace_id}/portal-sessions"
    )


async def portal_link(client: httpx.AsyncClient, tenant: Tenant, **body: Any) -> str:
    """A one-time link (its path and query, to open on any host)."""
    response = await client.post(portal_sessions_path(tenant), json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    url = urlsplit(response.json()["url"])
    return f"{url.path}?{url.query}"


async def enter(client: httpx.AsyncClient, link: str) -> httpx.Response:
    """Open the link; the client keeps the session cookie it sets."""
    response = await client.get(link)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/portal/"
    return response


async def signed_in(client: httpx.AsyncClient, tenant: Tenant, **body: Any) -> str:
    """Enter the portal as `tenant`; returns the session's CSRF token."""
    await enter(client, await portal_link(client, tenant, **body))
    page = await client.get("/portal/")
    assert page.status_code == 200, page.text
    found = CSRF_INPUT.search(page.text)
    assert found is not None
    return found.group(1)


def same_origin(client: httpx.AsyncClient) -> dict[str, str]:
    """The headers a browser sends with a form posted from a portal page."""
    return {"Origin": str(client.base_url).rstrip("/"), "Sec-Fetch-Site": "same-origin"}


async def post_form(
    client: httpx.AsyncClient, path: str, fields: dict[str, Any], **headers: str
) -> httpx.Response:
    return await client.post(path, data=fields, headers={**same_origin(client), **headers})


# -- a real service and a real browser ----------------------------------------------------------

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    """Debian's Chromium (Playwright's own browser download cannot work on these machines)."""
    import shutil

    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "install Chromium: apt-get install -y chromium (.ci/run does)"
    return found
