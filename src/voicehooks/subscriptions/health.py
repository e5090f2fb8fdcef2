"""A subscription's health as its attempts show it: the run of failures, and auto-disable.

Run by the dispatcher's recorder, in the transaction that records the attempts.
"""

import uuid

import asyncpg

_MARK_HEALTHY = """
UPDATE subscriptions SET failing_since = NULL
WHERE id = ANY($1::uuid[]) AND failing_since IS NOT NULL
"""

_MARK_FAILING = """
UPDATE subscriptions SET failing_since = now()
WHERE id = ANY($1::uuid[]) AND failing_since IS NULL
"""

_DISABLE_LONG_FAILING = """
UPDATE subscriptions
SET status = 'inactive', updated_at = now(),
    status_reason = 'failing since '
        || to_char(failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
WHERE id = ANY($1::uuid[]) AND status = 'active'
  AND failing_since <= now() - make_interval(secs => $2)
RETURNING id
"""

_DISABLE = """
UPDATE subscriptions SET status = 'inactive', status_reason = $2, updated_at = now()
WHERE id = ANY($1::uuid[]) AND status = 'active'
RETURNING id
"""

GONE_REASON = "endpoint answered 410"


async def mark_healthy(connection: asyncpg.Connection, subscription_ids: list[uuid.UUID]) -> None:
    """A success ends the run of failures."""
    if subscription_ids:
        await connection.execute(_MARK_HEALTHY, subscription_ids)


async def mark_failing(
    connection: asyncpg.Connection, subscription_ids: list[uuid.UUID], *, disable_after: float
) -> list[uuid.UUID]:
    """Start a run of failures where none runs; disable those failing for `disable_after` s."""
    if not subscription_ids:
        return []
    await connection.execute(_MARK_FAILING, subscription_ids)
    rows = await connection.fetch(_DISABLE_LONG_FAILING, subscription_ids, disable_after)
    return [row["id"] for row in rows]


async def disable_gone(
    connection: asyncpg.Connection, subscription_ids: list[uuid.UUID]
) -> list[uuid.UUID]:
    """The endpoint answered 410 Gone: the subscription becomes inactive."""
    if not subscription_ids:
        return []
    rows = await connection.fetch(_DISABLE, subscription_ids, GONE_REASON)
    return [row["id"] for row in rows]
