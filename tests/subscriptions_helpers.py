"""Helpers shared by the subscriptions, tenancy and OpenAPI tests."""

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx

from tests.support import TEST_ENCRYPTION_KEY
from voicehooks.encryption import KeyRing

PROBLEM_JSON = "application/problem+json"
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|\+00:00)$")
SUBSCRIPTION_FIELDS = {
    "id",
    "organizationId",
    "workspaceId",
    "service",
    "event",
    "eventFilters",
    "template",
    "url",
    "signingKey",
    "status",
    "statusReason",
    "createdAt",
    "updatedAt",
}


def assert_problem(
    response: httpx.Response, status: int, *, field: str | None = None
) -> dict[str, Any]:
    """An RFC 9457 problem with this status (and, for validation, an error at `field`)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers
    problem = response.json()
    assert isinstance(problem["type"], str) and problem["type"]
    assert isinstance(problem["title"], str) and problem["title"]
    assert problem["status"] == status
    assert isinstance(problem["detail"], str) and problem["detail"]
    if field is not None:
        fields = [error["field"] for error in problem["errors"]]
        assert field in fields, problem
        for error in problem["errors"]:
            assert set(error) == {"field", "message"}
            assert error["message"]
    return problem


def parse_timestamp(value: str) -> datetime:
    """An RFC 3339 timestamp in UTC."""
    assert RFC3339_UTC.match(value), value
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0
    return parsed.astimezone(UTC)


def channel() -> str:
    return str(uuid.uuid4())


TEST_KEY_RING = KeyRing.parse(TEST_ENCRYPTION_KEY)


async def stored_signing_keys(
    db: asyncpg.Connection, subscription_id: str
) -> tuple[str, list[str]]:
    """The stored current and previous signing keys of a subscription, decrypted as the
    service does (they are stored encrypted, bound to the subscription)."""
    row = await db.fetchrow(
        "SELECT signing_key, previous_signing_keys FROM subscriptions WHERE id = $1",
        uuid.UUID(subscription_id),
    )
    assert row is not None
    bound_to = uuid.UUID(subscription_id)
    previous = [
        TEST_KEY_RING.decrypt(entry["key"], bound_to=bound_to)
        for entry in json.loads(row["previous_signing_keys"])
    ]
    return TEST_KEY_RING.decrypt(row["signing_key"], bound_to=bound_to), previous
