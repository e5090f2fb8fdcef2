"""Re-encrypt every stored signing key under the first encryption key (`rotate-encryption-key`).

Safe while the service runs. Each batch is one short transaction over rows locked FOR NO KEY
UPDATE, the lock a PATCH takes: a concurrent PATCH either commits first, and its keys are
re-encrypted as it left them, or waits for the batch and reads its result; nothing is
overwritten. The first pass skips the rows locked at that moment so that it never waits for
the service; then passes that wait take the few rows left, until none is under another key.
Previous keys whose overlap has ended are dropped rather than re-encrypted: they sign nothing.
"""

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from voicehooks.db.urls import libpq_url
from voicehooks.encryption import KeyRing, UndecryptableError

BATCH_SIZE = 500
# Waiting passes after the first: each takes what a concurrent writer left under an old key.
WAITING_PASSES = 3
# How long a waiting pass waits for one batch's row locks before it gives up (reported).
LOCK_TIMEOUT = "10s"
MAX_DEADLOCK_RETRIES = 5

# A row with a key under another key than $1 (the first key's token prefix), not among $2 (the
# rows found undecryptable).
_NEEDS_WORK = """
id <> ALL($2::uuid[])
AND (NOT starts_with(signing_key, $1)
     OR EXISTS (SELECT 1 FROM jsonb_array_elements(previous_signing_keys) AS entry
                WHERE NOT starts_with(entry->>'key', $1)))
"""

# The next batch of such rows along the primary key, after $3.
_NEXT_BATCH = f"""
SELECT id, signing_key, previous_signing_keys FROM subscriptions
WHERE id > $3 AND {_NEEDS_WORK}
ORDER BY id
LIMIT $4
"""  # noqa: S608 - built of constants only

_COUNT_LEFT = f"SELECT count(*) FROM subscriptions WHERE {_NEEDS_WORK}"  # noqa: S608

_WRITE = """
UPDATE subscriptions s SET signing_key = r.signing_key, previous_signing_keys = r.previous::jsonb
FROM unnest($1::uuid[], $2::text[], $3::text[]) AS r(id, signing_key, previous)
WHERE s.id = r.id
"""


@dataclass
class Report:
    reencrypted: int = 0
    undecryptable: set[uuid.UUID] = field(default_factory=set)
    # Rows still under another key at the end (written meanwhile by a process whose first
    # key is another, or locked for longer than LOCK_TIMEOUT).
    left: int = 0

    def summary(self, key_ring: KeyRing) -> str:
        return (
            f"re-encrypted the signing keys of {self.reencrypted} subscriptions "
            f"under encryption key {key_ring.primary_id}"
        )

    def problems(self) -> list[str]:
        """Why the old key must not be removed yet, if it must not."""
        problems = []
        if self.undecryptable:
            problems.append(
                f"{len(self.undecryptable)} subscriptions hold signing keys that none of "
                "VOICEHOOKS_ENCRYPTION_KEYS decrypts; keep the key they were encrypted with"
            )
        if self.left:
            problems.append(
                f"{self.left} subscriptions are still under another key (written meanwhile by "
                "a process whose first key is another, or locked too long): run it again"
            )
        return problems


def _under_first_key(key_ring: KeyRing, token: str, subscription_id: uuid.UUID) -> str:
    if key_ring.is_current(token):
        return token
    return key_ring.encrypt(
        key_ring.decrypt(token, bound_to=subscription_id), bound_to=subscription_id
    )


def _rewritten(key_ring: KeyRing, row: asyncpg.Record, now: datetime) -> tuple[str, str]:
    """The row's keys under the first key: (signing_key, previous_signing_keys as JSON)."""
    subscription_id = row["id"]
    raw = row["previous_signing_keys"]
    entries = json.loads(raw) if isinstance(raw, str) else list(raw or [])
    previous = [
        {**entry, "key": _under_first_key(key_ring, entry["key"], subscription_id)}
        for entry in entries
        if datetime.fromisoformat(entry["expiresAt"]) > now
    ]
    current = _under_first_key(key_ring, row["signing_key"], subscription_id)
    return current, json.dumps(previous)


async def _batch(
    connection: asyncpg.Connection,
    key_ring: KeyRing,
    report: Report,
    *,
    after: uuid.UUID,
    size: int,
    wait: bool,
) -> list[asyncpg.Record]:
    """Re-encrypt one batch in one transaction; returns the rows it looked at."""
    lock = "FOR NO KEY UPDATE" if wait else "FOR NO KEY UPDATE SKIP LOCKED"
    async with connection.transaction():
        if wait:
            await connection.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        rows = await connection.fetch(
            _NEXT_BATCH + lock, key_ring.token_prefix, list(report.undecryptable), after, size
        )
        now = datetime.now(UTC)
        ids, keys, previous = [], [], []
        for row in rows:
            try:
                key, entries = _rewritten(key_ring, row, now)
            except UndecryptableError:
                report.undecryptable.add(row["id"])
                continue
            ids.append(row["id"])
            keys.append(key)
            previous.append(entries)
        if ids:
            await connection.execute(_WRITE, ids, keys, previous)
    report.reencrypted += len(ids)
    return rows


async def _pass(
    connection: asyncpg.Connection, key_ring: KeyRing, report: Report, *, size: int, wait: bool
) -> int:
    """One walk along the primary key; returns how many rows it re-encrypted."""
    before = report.reencrypted
    after = uuid.UUID(int=0)
    deadlocks = 0
    while True:
        try:
            rows = await _batch(connection, key_ring, report, after=after, size=size, wait=wait)
        except asyncpg.DeadlockDetectedError:
            # Against a writer that locks several subscriptions in another order: again.
            deadlocks += 1
            if deadlocks > MAX_DEADLOCK_RETRIES:
                break  # what is left is counted and reported
            continue
        except asyncpg.LockNotAvailableError:
            break  # a row held longer than LOCK_TIMEOUT: counted as left
        if len(rows) < size:
            break
        after = rows[-1]["id"]
    return report.reencrypted - before


async def reencrypt_signing_keys(
    connection: asyncpg.Connection, key_ring: KeyRing, *, batch_size: int = BATCH_SIZE
) -> Report:
    report = Report()
    await _pass(connection, key_ring, report, size=batch_size, wait=False)
    for _ in range(WAITING_PASSES):
        if not await _pass(connection, key_ring, report, size=batch_size, wait=True):
            break
    report.left = await connection.fetchval(
        _COUNT_LEFT, key_ring.token_prefix, list(report.undecryptable)
    )
    return report


async def reencrypt_database(
    database_url: str, key_ring: KeyRing, *, batch_size: int = BATCH_SIZE
) -> Report:
    connection = await asyncpg.connect(libpq_url(database_url))
    try:
        return await reencrypt_signing_keys(connection, key_ring, batch_size=batch_size)
    finally:
        await connection.close()
