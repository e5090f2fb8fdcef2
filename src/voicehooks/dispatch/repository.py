"""Every query of the dispatcher: claims, results, subscription health, waiting chains, purge.

These run on a raw asyncpg pool: they are the hot path, one statement per batch.
"""

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from voicehooks.dispatch.schedule import Verdict

_CLAIM = """
WITH candidates AS (
    SELECT d.id, d.next_attempt_at, s.target_host
    FROM deliveries d
    JOIN subscriptions s ON s.id = d.subscription_id
    WHERE d.state = 'pending' AND d.next_attempt_at <= now()
      AND (d.leased_until IS NULL OR d.leased_until < now())
      AND s.status = 'active'
      AND s.target_host <> ALL($1::text[])
      AND NOT EXISTS (
          SELECT 1 FROM deliveries earlier
          WHERE earlier.subscription_id = d.subscription_id AND earlier.call_id = d.call_id
            AND earlier.state = 'pending' AND earlier.seq < d.seq)
    ORDER BY d.next_attempt_at
    LIMIT $2
    FOR UPDATE OF d SKIP LOCKED
), ranked AS (
    SELECT c.id, c.next_attempt_at,
           row_number() OVER (PARTITION BY c.target_host ORDER BY c.next_attempt_at) AS position,
           COALESCE(b.free, $4) AS host_free
    FROM candidates c
    LEFT JOIN unnest($5::text[], $6::int[]) AS b(host, free) ON b.host = c.target_host
), chosen AS (
    SELECT id FROM ranked WHERE position <= host_free ORDER BY next_attempt_at LIMIT $3
)
UPDATE deliveries d
SET claim_token = (SELECT gen_random_uuid()), leased_until = now() + make_interval(secs => $7)
FROM subscriptions s, events e
WHERE d.id = ANY(ARRAY(SELECT id FROM chosen))
  AND s.id = d.subscription_id AND e.id = d.event_id
RETURNING d.id, d.claim_token, d.attempts, d.attempts_allowed, d.subscription_id, d.event_id,
          d.call_id, s.url, s.target_host, s.signing_key, s.previous_signing_keys, e.body, e.event,
          s.workspace_id
"""

# One statement per batch of results: the attempts are logged (whoever holds the claim now:
# the attempt happened), the outcomes are recorded where the claim is still the sender's, and
# a final outcome makes the next delivery of its call due if it waits. The release sees the
# rows as they were before this statement, so the finished deliveries are left out by id.
_RECORD_RESULTS = """
WITH result AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::float8[], $5::uuid[],
                         $6::uuid[], $7::text[], $8::int[], $9::int[], $10::int[], $11::text[],
                         $12::text[], $13::timestamptz[], $14::text[])
        AS r(id, token, outcome, delay, subscription_id, event_id, event, attempt, duration_ms,
             status_code, error, response_body, started_at, execution_status)
), logged AS (
    INSERT INTO attempts (id, delivery_id, subscription_id, event_id, event, attempt,
                          execution_status, duration_ms, response_status_code, error,
                          response_body, created_at)
    SELECT gen_random_uuid(), r.id, r.subscription_id, r.event_id, r.event, r.attempt,
           r.execution_status, r.duration_ms, r.status_code, r.error, r.response_body, r.started_at
    FROM result r
    WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.id = r.id)
), recorded AS (
    UPDATE deliveries d SET
        attempts = d.attempts + 1,
        state = CASE r.outcome WHEN 'retry' THEN 'pending' ELSE r.outcome END,
        next_attempt_at = CASE WHEN r.outcome = 'retry'
                               THEN now() + make_interval(secs => r.delay) END,
        claim_token = NULL,
        leased_until = NULL,
        updated_at = now()
    FROM result r
    WHERE d.id = r.id AND d.claim_token = r.token
    RETURNING d.id, d.subscription_id, d.call_id, d.state
)
UPDATE deliveries d SET next_attempt_at = now()
FROM (SELECT DISTINCT subscription_id, call_id FROM recorded WHERE state <> 'pending') AS k
CROSS JOIN LATERAL (
    SELECT p.id, p.next_attempt_at FROM deliveries p
    WHERE p.subscription_id = k.subscription_id AND p.call_id = k.call_id
      AND p.state = 'pending' AND p.id <> ALL($1::uuid[])
    ORDER BY p.seq
    LIMIT 1
) AS head
WHERE d.id = head.id AND head.next_attempt_at IS NULL
"""

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

_FAIL_PENDING = """
UPDATE deliveries
SET state = 'failed', next_attempt_at = NULL, claim_token = NULL, leased_until = NULL,
    last_error = $2,
    updated_at = now()
WHERE subscription_id = ANY($1::uuid[]) AND state = 'pending'
"""

_RELEASE_CLAIMS = """
UPDATE deliveries d SET claim_token = NULL, leased_until = NULL
FROM unnest($1::uuid[], $2::uuid[]) AS r(id, token)
WHERE d.id = r.id AND d.claim_token = r.token
"""

# The backstop of the above, for a waiting delivery whose predecessor ended in a race with
# its ingestion.
_RELEASE_STRANDED = """
UPDATE deliveries d SET next_attempt_at = now()
WHERE d.state = 'pending' AND d.next_attempt_at IS NULL
  AND NOT EXISTS (
      SELECT 1 FROM deliveries earlier
      WHERE earlier.subscription_id = d.subscription_id AND earlier.call_id = d.call_id
        AND earlier.state = 'pending' AND earlier.seq < d.seq)
"""

# Retention walks events by age (ix_events_created_at) and reaches deliveries through
# ix_deliveries_event_id; attempts go with their delivery (ON DELETE CASCADE).
_PURGE = {
    "deliveries": """
        DELETE FROM deliveries WHERE id IN (
            SELECT d.id FROM events e JOIN deliveries d ON d.event_id = e.id
            WHERE e.created_at < now() - make_interval(secs => $1) AND d.state <> 'pending'
            LIMIT $2)
    """,
    "events": """
        DELETE FROM events WHERE id IN (
            SELECT e.id FROM events e
            WHERE e.created_at < now() - make_interval(secs => $1)
              AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
            LIMIT $2)
    """,
}


# Settings of every dispatcher connection. Plans: the dispatcher's statements touch a batch of
# rows by key, but the deliveries table changes faster than planner statistics follow
# (autovacuum may lag, or be off), and stale estimates turn them into scans of the whole table;
# so rows are reached through indexes and nested loops only, and the claim walks
# ix_deliveries_due in order and stops early instead of sorting. The penalty that rules the
# other plans out would also trigger JIT compilation (hundreds of ms), so JIT goes too.
SESSION_SETTINGS = {
    "enable_seqscan": "off",
    "enable_hashjoin": "off",
    "enable_mergejoin": "off",
    "enable_sort": "off",
    "jit": "off",
}


# Every new dispatcher connection looks up their types first (see db.engine.look_up_types).
HOT_STATEMENTS = (_CLAIM, _RECORD_RESULTS)


def _affected(status: str) -> int:
    """Rows a statement changed, from its status ("UPDATE 3")."""
    return int(status.rsplit(" ", 1)[-1])


# Slots, not frozen: one is built per attempt, and a frozen init costs three times as much.
@dataclass(slots=True)
class ClaimedDelivery:
    id: uuid.UUID
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


@dataclass(slots=True)
class AttemptRecord:
    delivery: ClaimedDelivery
    outcome: Verdict
    retry_in: float
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    response_body: str | None
    # A 410: the subscription is made inactive with the outcome.
    endpoint_gone: bool = False

    @property
    def execution_status(self) -> str:
        return "succeeded" if self.outcome == Verdict.SUCCEEDED else "failed"


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
    """Lease up to `limit` due deliveries, each the head of its call, within per-host room."""
    full_hosts = [host for host, free in host_free.items() if free <= 0]
    busy = [(host, free) for host, free in host_free.items() if free > 0]
    # One statement, committed on its own (and durably: a claim lost in a crash of the
    # database could let a second worker send the same delivery while the first one does).
    rows = await connection.fetch(
        _CLAIM,
        full_hosts,
        limit,
        limit,
        per_host,
        [host for host, _ in busy],
        [free for _, free in busy],
        lease_seconds,
    )
    now = datetime.now(UTC)
    return [
        ClaimedDelivery(
            id=row["id"],
            attempts_made=row["attempts"],
            attempts_allowed=row["attempts_allowed"],
            subscription_id=row["subscription_id"],
            workspace_id=row["workspace_id"],
            event_id=row["event_id"],
            call_id=row["call_id"],
            url=row["url"],
            target_host=row["target_host"],
            encrypted_key=row["signing_key"],
            encrypted_previous_keys=_live_keys(row["previous_signing_keys"], now),
            body=row["body"].encode(),
            event=row["event"],
            claim_token=row["claim_token"],
        )
        for row in rows
    ]


async def record_attempts(
    connection: asyncpg.Connection,
    records: Sequence[AttemptRecord],
    *,
    auto_disable_after: float,
    inactive_error: str,
) -> tuple[list[tuple[uuid.UUID, str]], int]:
    """Store a batch of attempt results and their consequences, in one transaction.

    Returns the subscriptions it made inactive, with the reason ("failing" or "gone"), and
    how many waiting deliveries became due because the one before them in their call ended.
    """
    async with connection.transaction():
        # Losing this commit in a database crash only means the deliveries are sent again
        # after their lease (at least once still holds), so it need not wait for the WAL flush.
        await connection.execute("SET LOCAL synchronous_commit TO off")
        # Subscriptions first, then deliveries: the order in which PATCH and DELETE lock them.
        failing = sorted({r.delivery.subscription_id for r in records if r.outcome != "succeeded"})
        # A success ends the run of failures; a failure in the same batch starts a new one.
        healthy = sorted({r.delivery.subscription_id for r in records if r.outcome == "succeeded"})
        if healthy:
            await connection.execute(_MARK_HEALTHY, healthy)
        disabled: list[tuple[uuid.UUID, str]] = []
        if failing:
            await connection.execute(_MARK_FAILING, failing)
            rows = await connection.fetch(_DISABLE_LONG_FAILING, failing, auto_disable_after)
            disabled += [(row["id"], "failing") for row in rows]
        gone = sorted({r.delivery.subscription_id for r in records if r.endpoint_gone})
        if gone:
            rows = await connection.fetch(_DISABLE, gone, "endpoint answered 410")
            disabled += [(row["id"], "gone") for row in rows]
        released = await connection.execute(
            _RECORD_RESULTS,
            [r.delivery.id for r in records],
            [r.delivery.claim_token for r in records],
            [r.outcome for r in records],
            [r.retry_in for r in records],
            [r.delivery.subscription_id for r in records],
            [r.delivery.event_id for r in records],
            [r.delivery.event for r in records],
            [r.delivery.attempts_made + 1 for r in records],
            [r.duration_ms for r in records],
            [r.status_code for r in records],
            [r.error for r in records],
            [r.response_body for r in records],
            [r.started_at for r in records],
            [r.execution_status for r in records],
        )
        if disabled:
            await connection.execute(_FAIL_PENDING, [sub for sub, _ in disabled], inactive_error)
    return disabled, _affected(released)


async def release_claims(
    connection: asyncpg.Connection, deliveries: Sequence[ClaimedDelivery]
) -> None:
    """Give back claimed deliveries that were never sent: due again at once, attempts unchanged."""
    await connection.execute(
        _RELEASE_CLAIMS, [d.id for d in deliveries], [d.claim_token for d in deliveries]
    )


async def release_stranded(connection: asyncpg.Connection) -> int:
    result = await connection.execute(_RELEASE_STRANDED)
    return _affected(result)


async def purge_older_than(
    connection: asyncpg.Connection, seconds: float, batch: int = 1000, max_batches: int = 100
) -> dict[str, int]:
    """Delete old final deliveries (with their attempts) and events in short batches."""
    deleted: dict[str, int] = {}
    for table, statement in _PURGE.items():
        deleted[table] = 0
        for _ in range(max_batches):
            result = await connection.execute(statement, seconds, batch)
            count = _affected(result)
            deleted[table] += count
            if count < batch:
                break
    return deleted
