"""Node receivers verify real deliveries (SPEC §4): README's Node example, with the npm
packages `standardwebhooks` and `svix`, and the ways of giving the key that refuse them.

Node and npm must be installed (`.ci/run` installs them from Debian when they are missing);
the packages are installed from tests/node/package-lock.json (`npm ci`) when absent.
"""

import asyncio
import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.delivery_helpers import ingest
from tests.readme_blocks import block
from tests.support import call_event, create_subscription, wait_until

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
README_KEY = "mysecretkey-of-my-own"  # the key README's Node example holds
UNICODE_KEY = "clé-secrète-ü-0001"


@pytest.fixture(scope="session")
def node() -> str:
    found = shutil.which("node")
    if found is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed: apt-get install -y nodejs npm (.ci/run does it)")
    if not (NODE_DIR / "node_modules" / "svix").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True)
    return found


@pytest.fixture
def readme_modules():
    """README's Node example as a module importing each package, where node finds them."""
    code = block("node").code
    assert 'from "standardwebhooks"' in code
    paths = {}
    for package in ("standardwebhooks", "svix"):
        path = NODE_DIR / f"readme-{package}-{uuid.uuid4().hex[:8]}.mjs"
        path.write_text(code.replace('from "standardwebhooks"', f'from "{package}"'))
        paths[package] = path
    yield {package: str(path) for package, path in paths.items()}
    for path in paths.values():
        path.unlink()


async def run_node(node: str, request: dict) -> list[dict]:
    process = await asyncio.create_subprocess_exec(
        node,
        "check.mjs",
        cwd=NODE_DIR,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(json.dumps(request).encode()), 60)
    assert process.returncode == 0, err.decode()
    results: list[dict] = json.loads(out)
    return results


async def test_node_verifies_real_deliveries(
    node, readme_modules, client, tenant, receiver, dispatcher
):
    for path, key in (("/ascii", README_KEY), ("/unicode", UNICODE_KEY)):
        await create_subscription(client, tenant, url=f"{receiver.url}{path}", signingKey=key)
    # A body with non-ASCII text as well: the signature covers its UTF-8 bytes.
    await ingest(client, call_event(tenant.workspace_id, status="ringing", note="Zoë ☎"))
    await wait_until(lambda: len(receiver.requests) == 2)

    deliveries = []
    for request in sorted(receiver.requests, key=lambda r: r.path):
        key = README_KEY if request.path == "/ascii" else UNICODE_KEY
        headers = {name.lower(): value for name, value in request.headers.items()}  # as Node has
        url = f"{receiver.url}{request.path}"
        delivery = {"body": request.body.decode(), "headers": headers, "url": url, "key": key}
        deliveries.append(delivery)
        # The same, with one byte of the body changed, and with another URL for Bird's check.
        forged = delivery | {"body": delivery["body"].replace("ringing", "rInging")}
        deliveries.append(forged | {"url": url + "/elsewhere"})
    ascii_ok, ascii_forged, unicode_ok, unicode_forged = await run_node(
        node, {"modules": readme_modules, "deliveries": deliveries}
    )

    # README's example (holding the ASCII key), with either package.
    assert ascii_ok["readme"] == {"standardwebhooks": True, "svix": True}
    assert ascii_ok["readmeBird"] == {"standardwebhooks": True, "svix": True}
    for refused in (ascii_forged, unicode_ok, unicode_forged):
        assert set(refused["readme"].values()) == {False}
        assert set(refused["readmeBird"].values()) == {False}

    # The key as its UTF-8 bytes with format "raw" is the way that always works.
    for package in ("standardwebhooks", "svix"):
        assert ascii_ok["ways"][f"{package}: UTF-8 bytes, raw"] is True
        assert unicode_ok["ways"][f"{package}: UTF-8 bytes, raw"] is True
        # A plain string with format "raw" works for an ASCII key only...
        assert ascii_ok["ways"][f"{package}: string, raw"] is True
        assert unicode_ok["ways"][f"{package}: string, raw"] is False
        # ...and without format "raw" the key is taken for base64.
        assert ascii_ok["ways"][f"{package}: string"] is False
        assert unicode_ok["ways"][f"{package}: string"] is False
    for forged in (ascii_forged, unicode_forged):
        assert set(forged["ways"].values()) == {False}
