"""Hourly figures per subscription for the overview and the success rates: one row per hour.

Counting a busy workspace's day from its deliveries reads every one of them (a million rows is
over a second). So each closed hour is counted once into `delivery_hours` and read from there,
and the current hour is always counted live. A stored hour can still change: its pending
deliveries end, and a retry or recover reopens finished ones. So a row is counted again once it
is older than REFRESH_AFTER while it had pending deliveries, or older than
SETTLED_REFRESH_AFTER when it had none; a page counts such hours again up to RECOUNT_BUDGET
deliveries (at least one hour; those with pending deliveries first, then the longest
unrefreshed) and shows the others as stored, so that no page pays for a whole day again. Retry
and recover through the portal forget the hours they reopen (`forget`), so those show at once.
The portal is the only writer of the table; it is a cache of what `deliveries` and `attempts`
say, and can be emptied at any time.

Attempt latency is kept as a histogram (counts per duration bucket), so that the hours of
several subscriptions add up; percentiles are read off it, interpolated within a bucket.
"""

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

# Upper bounds of the latency buckets, in ms (about 1.5x apart); the last bucket is open.
LATENCY_BOUNDS_MS = (
    1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700,
    1000, 1500, 2000, 3000, 5000, 7000, 10000, 15000, 20000, 30000,
)  # fmt: skip
BUCKETS = len(LATENCY_BOUNDS_MS) + 1
REFRESH_AFTER = timedelta(seconds=60)
SETTLED_REFRESH_AFTER = timedelta(hours=1)
# Deliveries a page may read to count stored hours again (about 10 ms of counting).
RECOUNT_BUDGET = 10_000
HOUR = timedelta(hours=1)


@dataclass
class HourFigures:
    succeeded: int = 0
    failed: int = 0
    pending: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * BUCKETS)

    def add(self, other: "HourFigures") -> None:
        self.succeeded += other.succeeded
        self.failed += other.failed
        self.pending += other.pending
        self.latency = [a + b for a, b in zip(self.latency, other.latency, strict=True)]

    def percentile(self, q: float) -> float | None:
        """The q-quantile of the hour's attempt durations (ms), None without attempts."""
        total = sum(self.latency)
        if not total:
            return None
        rank = q * total
        seen = 0
        for bucket, count in enumerate(self.latency):
            if count and seen + count >= rank:
                low = LATENCY_BOUNDS_MS[bucket - 1] if bucket else 0
                high = LATENCY_BOUNDS_MS[bucket] if bucket < len(LATENCY_BOUNDS_MS) else 2 * low
                return low + (high - low) * (rank - seen) / count
            seen += count
        return float(LATENCY_BOUNDS_MS[-1])


Figures = dict[tuple[uuid.UUID, datetime], HourFigures]

# Both read through the portal's indexes (ix_deliveries_portal_recent carries the state,
# ix_attempts_portal_latency the duration): no visit to the tables.
_COUNT_DELIVERIES = """
    SELECT d.subscription_id, date_bin('1 hour', d.created_at, $2) AS hour,
           count(*) FILTER (WHERE d.state = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE d.state = 'failed') AS failed,
           count(*) FILTER (WHERE d.state = 'pending') AS pending
    FROM deliveries d
    WHERE d.subscription_id = ANY($1::uuid[]) AND d.created_at >= $2 AND d.created_at < $3
    GROUP BY 1, 2
"""

_COUNT_LATENCY = """
    SELECT a.subscription_id, date_bin('1 hour', a.created_at, $2) AS hour,
           width_bucket(a.duration_ms, $4::int[]) AS bucket, count(*) AS n
    FROM attempts a
    WHERE a.subscription_id = ANY($1::uuid[]) AND a.created_at >= $2 AND a.created_at < $3
    GROUP BY 1, 2, 3
"""

_READ = """
    SELECT subscription_id, hour, succeeded, failed, pending, latency, refreshed_at
    FROM delivery_hours
    WHERE subscription_id = ANY($1::uuid[]) AND hour >= $2 AND hour < $3
"""

_STORE = """
    INSERT INTO delivery_hours (subscription_id, hour, succeeded, failed, pending, latency,
                                refreshed_at)
    VALUES ($1, $2, $3, $4, $5, $6, now())
    ON CONFLICT (subscription_id, hour) DO UPDATE SET
        succeeded = excluded.succeeded, failed = excluded.failed, pending = excluded.pending,
        latency = excluded.latency, refreshed_at = excluded.refreshed_at
"""


async def _count(
    connection: asyncpg.Connection, subscriptions: list[uuid.UUID], start: datetime, end: datetime
) -> Figures:
    """Figures of every hour in [start, end) from the deliveries and attempts themselves."""
    figures: Figures = {}
    for row in await connection.fetch(_COUNT_DELIVERIES, subscriptions, start, end):
        hour = figures.setdefault((row["subscription_id"], row["hour"]), HourFigures())
        hour.succeeded, hour.failed, hour.pending = row["succeeded"], row["failed"], row["pending"]
    bounds = list(LATENCY_BOUNDS_MS)
    for row in await connection.fetch(_COUNT_LATENCY, subscriptions, start, end, bounds):
        hour = figures.setdefault((row["subscription_id"], row["hour"]), HourFigures())
        hour.latency[row["bucket"]] += row["n"]
    return figures


async def hourly_figures(
    connection: asyncpg.Connection,
    subscriptions: Sequence[uuid.UUID],
    start: datetime,
    now: datetime,
) -> Figures:
    """Figures per (subscription, hour) from the hour `start` (on the hour) up to `now`."""
    if not subscriptions:
        return {}
    ids = list(subscriptions)
    current = now.replace(minute=0, second=0, microsecond=0)
    figures: Figures = {}
    # Stored rows due to be counted again: those with pending deliveries first, then the
    # longest unrefreshed, then the latest hours (their deliveries are the likeliest to move).
    aged: list[tuple[bool, datetime, float, tuple[uuid.UUID, datetime], int]] = []
    for row in await connection.fetch(_READ, ids, start, current):
        key = (row["subscription_id"], row["hour"])
        figures[key] = HourFigures(
            row["succeeded"], row["failed"], row["pending"], list(row["latency"])
        )
        # No pending deliveries, and counted once the hour's last transactions had committed.
        settled = not row["pending"] and row["refreshed_at"] >= key[1] + HOUR + REFRESH_AFTER
        if row["refreshed_at"] < now - (SETTLED_REFRESH_AFTER if settled else REFRESH_AFTER):
            size = row["succeeded"] + row["failed"] + row["pending"]
            aged.append((settled, row["refreshed_at"], -key[1].timestamp(), key, size))
    missing = [(sid, hour) for sid in ids for hour in _hours(start, current)]
    missing = [key for key in missing if key not in figures]
    recount: list[tuple[uuid.UUID, datetime]] = []
    budget = RECOUNT_BUDGET
    for *_, key, size in sorted(aged):
        if recount and size > budget:
            break
        recount.append(key)
        budget -= size
    # The missing hours in one count (they follow each other: a first visit, the hours since
    # the last one, or those a recover forgot), each aged one alone: it may be anywhere.
    groups = [missing] if missing else []
    groups += [[key] for key in recount]
    rows = []
    for group in groups:
        group_ids = sorted({sid for sid, _ in group})
        first, last = min(hour for _, hour in group), max(hour for _, hour in group)
        counted = await _count(connection, group_ids, first, last + HOUR)
        for sid, hour in group:
            f = figures[(sid, hour)] = counted.get((sid, hour), HourFigures())
            rows.append((sid, hour, f.succeeded, f.failed, f.pending, f.latency))
    if rows:
        await connection.executemany(_STORE, rows)
    figures.update(await _count(connection, ids, current, current + HOUR))
    return figures


def _hours(start: datetime, end: datetime) -> Iterable[datetime]:
    hours = []
    while start < end:
        hours.append(start)
        start += HOUR
    return hours


async def forget(
    connection: asyncpg.Connection,
    subscription_id: uuid.UUID,
    since: datetime,
    until: datetime | None = None,
) -> None:
    """Forget the subscription's stored hours from the one holding `since` on (to the one
    holding `until`): a retry or a recover reopened deliveries of them, and the next page
    counts them again."""
    await connection.execute(
        "DELETE FROM delivery_hours WHERE subscription_id = $1 AND hour >= $2"
        " AND ($3::timestamptz IS NULL OR hour <= $3)",
        subscription_id,
        _hour_of(since),
        None if until is None else _hour_of(until),
    )


def _hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
