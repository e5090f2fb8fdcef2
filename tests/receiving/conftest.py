"""The receiving tools' tests run against one `voicehooks serve` per module."""

import httpx
import pytest

from tests.receiving_helpers import serving


@pytest.fixture(scope="module")
async def service(database_url, tmp_path_factory):
    """The base URL of a `voicehooks serve` of this module."""
    async with serving(database_url, tmp_path_factory.mktemp("serve") / "serve.log") as base:
        yield base


@pytest.fixture
async def api(service, db):
    async with httpx.AsyncClient(base_url=service, timeout=30) as http:
        yield http
