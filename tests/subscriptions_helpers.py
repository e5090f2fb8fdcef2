"""Helpers shared by the subscriptions, tenancy and OpenAPI tests."""

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

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
