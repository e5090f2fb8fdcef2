"""Pages of history read only the days they can show: the token's time bound prunes the rest.

Each case fills ten days of one subscription's history, asks for a first page and then for
the next one through HTTP, catches the statement the next page ran, and runs it again under
EXPLAIN (ANALYZE): the partitions it read are those of the days at or before the bound.
"""

import contextlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.portal_helpers import signed_in
from tests.support import create_subscription
from voicehooks.db import partitions

DAYS = 10
PER_DAY = 5


async def _fill(db: asyncpg.Connection, subscription_id: str) -> None:
    """PER_DAY deliveries a day for DAYS days (each with an attempt), oldest first in seq."""
    now = datetime.now(UTC)
    # Those the service keeps (another test may have run a shorter retention meanwhile).
    await partitions.ensure_partitions(
        db, partitions.days_between((now - timedelta(days=DAYS)).date(), now.date())
    )
    await db.execute(
        """
        WITH rows AS (
            SELECT gen_random_uuid() AS event_id, gen_random_uuid() AS delivery_id,
                   $2::timestamptz - make_interval(days => d) + make_interval(secs => n) AS at,
                   d, n
            FROM generate_series(1, $3) AS d, generate_series(1, $4) AS n
            ORDER BY d DESC, n
        ), e AS (
            INSERT INTO events (id, workspace_id, event, call_id, body, delivery_count,
                                created_at)
            SELECT event_id, s.workspace_id, 'voice.inbound', 'call-' || d || '-' || n, '{}',
                   1, at
            FROM rows, subscriptions s WHERE s.id = $1::uuid
        ), a AS (
            INSERT INTO attempts (id, delivery_id, subscription_id, event_id, event, attempt,
                                  execution_status, duration_ms, response_status_code,
                                  created_at)
            SELECT gen_random_uuid(), delivery_id, $1::uuid, event_id, 'voice.inbound', 1,
                   'succeeded', 5, 200, at
            FROM rows
        )
        INSERT INTO deliveries (id, event_id, subscription_id, call_id, state, attempts,
                                created_at)
        SELECT delivery_id, event_id, $1::uuid, 'call-' || d || '-' || n, 'succeeded', 1, at
        FROM rows ORDER BY d DESC, n
        """,
        uuid.UUID(subscription_id),
        now,
        DAYS,
        PER_DAY,
    )


@contextlib.contextmanager
def _statements(engine: AsyncEngine) -> Iterator[list[tuple[str, Any]]]:
    """The statements the API runs meanwhile, with their parameters."""
    caught: list[tuple[str, Any]] = []

    def catch(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        caught.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", catch)
    try:
        yield caught
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", catch)


def _scanned(plan: dict[str, Any]) -> set[str]:
    """Relations the executed plan read (a scan that never ran reads nothing)."""
    found = set()
    if plan.get("Relation Name") and int(plan.get("Actual Loops", 0)) > 0:
        found.add(plan["Relation Name"])
    for child in plan.get("Plans", []):
        found |= _scanned(child)
    return found


async def _read_by(db: asyncpg.Connection, caught: list[tuple[str, Any]], table: str) -> set[str]:
    """The partitions of `table` that the caught statement reading it reads."""
    [(statement, parameters)] = [(s, p) for s, p in caught if f"FROM {table}" in s]
    raw = await db.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", *parameters)
    names = _scanned(json.loads(raw)[0]["Plan"])
    return {name for name in names if name.startswith(f"{table}_p")}


def _days_after(day: Any) -> set[str]:
    """Partition names of every day after `day` up to the last one created ahead."""
    last = datetime.now(UTC).date() + timedelta(days=partitions.DAYS_AHEAD)
    return {
        partitions.partition_name(table, d)
        for d in partitions.days_between(day + timedelta(days=1), last)
        for table in partitions.HISTORY_TABLES
    }


async def test_the_next_page_of_logs_and_deliveries_skips_newer_days(app, client, db, tenant):
    sub = await create_subscription(client, tenant)
    await _fill(db, sub["id"])
    await db.execute("ANALYZE events, deliveries, attempts")
    engine = app.state.engine
    base = tenant.subscription(sub["id"])

    for what, table in (("logs", "attempts"), ("deliveries", "deliveries")):
        # Past the newest seven days: the next page starts three days before the oldest.
        first = await client.get(
            f"{base}/{what}", params={"limit": 7 * PER_DAY}, headers=tenant.headers
        )
        assert first.status_code == 200, first.text
        last_shown = datetime.fromisoformat(first.json()["results"][-1]["createdAt"])
        with _statements(engine) as caught:
            following = await client.get(
                f"{base}/{what}",
                params={"limit": PER_DAY, "pageToken": first.json()["nextPageToken"]},
                headers=tenant.headers,
            )
        assert following.status_code == 200
        shown = [row["createdAt"] for row in following.json()["results"]]
        assert len(shown) == PER_DAY and max(shown) <= first.json()["results"][-1]["createdAt"]

        read = await _read_by(db, caught, table)
        # A delivery page's bound has an hour's slack: at most the day after the last shown.
        bound_day = (last_shown + timedelta(hours=1)).astimezone(UTC).date()
        assert read, what
        assert read & _days_after(bound_day) == set(), what


async def test_the_portals_next_page_of_deliveries_skips_newer_days(app, client, db, tenant):
    sub = await create_subscription(client, tenant)
    await _fill(db, sub["id"])
    await db.execute("ANALYZE events, deliveries, attempts")
    engine = app.state.engine
    await signed_in(client, tenant)
    page = await client.get("/portal/deliveries")
    assert page.status_code == 200
    oldest_day = (datetime.now(UTC) - timedelta(days=DAYS)).date()
    # A cursor three days back, as a page's "older" link carries it.
    from voicehooks.portal.repository import encode_cursor

    at = datetime.now(UTC) - timedelta(days=3)
    with _statements(engine) as caught:
        older = await client.get("/portal/deliveries", params={"after": encode_cursor((at, 2**62))})
    assert older.status_code == 200
    read = await _read_by(db, caught, "deliveries")
    assert read
    assert read & _days_after(at.date()) == set()
    assert partitions.partition_name("deliveries", oldest_day) not in _days_after(at.date())
