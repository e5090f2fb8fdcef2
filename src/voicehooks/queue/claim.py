"""Claims: lease due deliveries, per destination host, within the room each host has.

Statistics-proof by construction: every step is an index walk that stops early, so the plan
does not hinge on how many rows the planner thinks are due. The queue keeps no column
statistics (migration 0010): with a sample of long-gone rows the planner once costed a host's
ordered walk as reading half the table, and read every due row instead.
- `hosts` lists the distinct destinations in the queue, one probe of ix_delivery_queue_host_due
  each (a skip scan); only hosts with pending work are there.
- `candidates` takes, per host with room, its earliest rows in due order (same index) and
  keeps those due. A host that is full costs nothing, however long its backlog: a dead
  receiver's rows are never walked by claims for the others.
- Rows are locked and leased by their physical address (ctid, a TID scan: its cost does not
  hinge on row estimates either, which for this table of short-lived rows are often those
  of an empty table). SKIP LOCKED leaves a concurrent worker's pick to it; a row another
  worker changed meanwhile no longer has that address and is skipped too. The lease moves
  the due time to the end of the lease, so a leased row is not due again until its worker
  has had the time to send it.
- What the claimed deliveries need from history and their subscriptions (attempts so far,
  the event, URL and keys) is read next, in a statement of its own that names their days:
  see HISTORY_SQL.
"""

import contextlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

CLAIM_SQL = """
WITH RECURSIVE hosts AS (
    (SELECT target_host FROM delivery_queue WHERE due_at IS NOT NULL
     ORDER BY target_host LIMIT 1)
    UNION ALL
    SELECT (SELECT q.target_host FROM delivery_queue q
            WHERE q.target_host > hosts.target_host AND q.due_at IS NOT NULL
            ORDER BY q.target_host LIMIT 1)
    FROM hosts WHERE hosts.target_host IS NOT NULL
), room AS (
    SELECT h.target_host, COALESCE(b.free, $3) AS free
    FROM hosts h LEFT JOIN unnest($1::text[], $2::int[]) AS b(host, free)
         ON b.host = h.target_host
    WHERE h.target_host IS NOT NULL
), candidates AS (
    SELECT c.row_id, c.due_at
    FROM room CROSS JOIN LATERAL (
        SELECT q.ctid AS row_id, q.due_at FROM delivery_queue q
        WHERE q.target_host = room.target_host AND q.due_at IS NOT NULL
        ORDER BY q.due_at
        LIMIT greatest(room.free, 0)
    ) AS c
    WHERE c.due_at <= now()
    ORDER BY c.due_at
    LIMIT $4
), locked AS (
    SELECT q.ctid AS row_id FROM delivery_queue q
    WHERE q.ctid = ANY(ARRAY(SELECT row_id FROM candidates))
    FOR UPDATE SKIP LOCKED
)
UPDATE delivery_queue q
SET claim_token = (SELECT gen_random_uuid()), due_at = now() + make_interval(secs => $5)
FROM locked
WHERE q.ctid = locked.row_id
RETURNING q.delivery_id, q.delivery_created_at, q.claim_token, q.subscription_id, q.call_id,
          q.target_host
"""

# What the claimed deliveries need besides their queue rows: their attempts so far, their
# events and their subscriptions. Apart from the claim, because a statement joining the
# day-partitioned tables by a row's value is planned over every day's partition and index
# (3.3 ms a claim on 38 days, against 0.5 ms of execution); here the days are values of the
# statement, so the planner prunes to them. Each row is a primary-key probe of each table (a
# LATERAL with LIMIT is not turned into a join that scans a table, whatever its statistics),
# and each probe names its row's own day: a list of days prunes only in a plan made for its
# values, so in a generic plan every row probed every day's index (38, 0.11 ms a row).
HISTORY_SQL = """
SELECT d.id, d.attempts, d.attempts_allowed, d.event_id, e.body, e.event,
       s.url, s.signing_key, s.previous_signing_keys, s.workspace_id
FROM unnest($1::uuid[], $3::timestamptz[]) AS r(id, created_at)
CROSS JOIN LATERAL (
    SELECT d.id, d.attempts, d.attempts_allowed, d.event_id, d.subscription_id, d.created_at
    FROM deliveries d
    WHERE d.id = r.id AND d.created_at = r.created_at AND d.created_at = ANY($2::timestamptz[])
    LIMIT 1
) AS d
CROSS JOIN LATERAL (
    SELECT e.body, e.event FROM events e
    WHERE e.id = d.event_id AND e.created_at = d.created_at
      AND e.created_at = ANY($2::timestamptz[])
    LIMIT 1
) AS e
CROSS JOIN LATERAL (
    SELECT s.url, s.signing_key, s.previous_signing_keys, s.workspace_id
    FROM subscriptions s WHERE s.id = d.subscription_id LIMIT 1
) AS s
"""

_RELEASE_CLAIMS = """
UPDATE delivery_queue q SET claim_token = NULL, due_at = now()
FROM unnest($1::uuid[], $2::uuid[]) AS r(id, token)
WHERE q.delivery_id = r.id AND q.claim_token = r.token
"""

HOT_STATEMENTS = (CLAIM_SQL, HISTORY_SQL)


# Slots, not frozen: one is built per attempt, and a frozen init costs three times as much.
@dataclass(slots=True)
class ClaimedDelivery:
    id: uuid.UUID
    # The delivery's (and its event's) created_at: the partition its row is in.
    created_at: datetime
    attempts_made: int
    attempts_allowed: int | None
    subscription_id: uuid.UUID
    workspace_id: uuid.UUID
    event_id: uuid.UUID
    call_id: str
    url: str
    target_host: str
    # As stored: encrypted, bound to the subscription (the worker decrypts them, cached).
    encrypted_key: str
    encrypted_previous_keys: tuple[str, ...]
    body: bytes
    event: str
    claim_token: uuid.UUID


def _live_keys(raw: object, now: datetime) -> tuple[str, ...]:
    if not raw or raw == "[]":  # no rotation in progress: the common case, on the hot path
        return ()
    entries: list[dict[str, str]] = json.loads(raw) if isinstance(raw, str) else list(raw or [])  # type: ignore[call-overload]
    return tuple(
        entry["key"] for entry in entries if datetime.fromisoformat(entry["expiresAt"]) > now
    )


async def claim(
    connection: asyncpg.Connection,
    *,
    limit: int,
    host_free: dict[str, int],
    per_host: int,
    lease_seconds: float,
) -> list[ClaimedDelivery]:
    """Lease up to `limit` due deliveries, at most `host_free[host]` (else `per_host`) each."""
    # The claim is one statement: it commits on its own, durably (a claim lost in a crash of
    # the database could let a second worker send the same delivery while the first one
    # does), without the BEGIN and COMMIT round trips of a transaction. An empty claim, the
    # common case when idle, is one round trip.
    rows = await connection.fetch(
        CLAIM_SQL, list(host_free), list(host_free.values()), per_host, limit, lease_seconds
    )
    if not rows:
        return []
    try:
        history = {
            row["id"]: row
            for row in await connection.fetch(
                HISTORY_SQL,
                [row["delivery_id"] for row in rows],
                list({row["delivery_created_at"] for row in rows}),
                [row["delivery_created_at"] for row in rows],
            )
        }
    except Exception:
        # Due at once again if the database still answers; else after their lease.
        with contextlib.suppress(Exception):
            await connection.execute(
                _RELEASE_CLAIMS,
                [row["delivery_id"] for row in rows],
                [row["claim_token"] for row in rows],
            )
        raise
    now = datetime.now(UTC)
    claimed = []
    for row in rows:
        # None only when the delivery went (its subscription deleted) since the claim.
        past = history.get(row["delivery_id"])
        if past is None:
            continue
        claimed.append(
            ClaimedDelivery(
                id=row["delivery_id"],
                created_at=row["delivery_created_at"],
                attempts_made=past["attempts"],
                attempts_allowed=past["attempts_allowed"],
                subscription_id=row["subscription_id"],
                workspace_id=past["workspace_id"],
                event_id=past["event_id"],
                call_id=row["call_id"],
                url=past["url"],
                target_host=row["target_host"],
                encrypted_key=past["signing_key"],
                encrypted_previous_keys=_live_keys(past["previous_signing_keys"], now),
                body=past["body"].encode(),
                event=past["event"],
                claim_token=row["claim_token"],
            )
        )
    return claimed


async def release_claims(
    connection: asyncpg.Connection, deliveries: Sequence[ClaimedDelivery]
) -> None:
    """Give back claimed deliveries that were never sent: due again at once, attempts unchanged."""
    await connection.execute(
        _RELEASE_CLAIMS, [d.id for d in deliveries], [d.claim_token for d in deliveries]
    )
