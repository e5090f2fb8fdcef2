"""Prometheus metrics that stay right when the API and the workers are separate processes.

Counters live in Postgres (`metric_counters`): each process adds up its increments in memory and
flushes them every second; a scrape reads the shared totals plus what this process has not
flushed yet. Backlog gauges are read from the deliveries table at scrape time.
"""

import asyncio
import bisect
import contextlib
import functools
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager

import asyncpg
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from voicehooks.db.outage import DATABASE_ERRORS

EVENTS_INGESTED = "voicehooks_events_ingested"
ATTEMPTS = "voicehooks_delivery_attempts"
DELIVERIES_FINISHED = "voicehooks_deliveries_finished"
SUBSCRIPTIONS_AUTO_DISABLED = "voicehooks_subscriptions_auto_disabled"
ATTEMPT_DURATION = "voicehooks_attempt_duration_seconds"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_BUCKET = f"{ATTEMPT_DURATION}_bucket"
_SUM = f"{ATTEMPT_DURATION}_sum"
# The bucket an observation falls in (not cumulative), "+Inf" last.
_BUCKET_LABELS = (*(f"le={bound}" for bound in DURATION_BUCKETS), "le=+Inf")

_COUNTERS = {
    EVENTS_INGESTED: ("Events accepted by the ingestion API.", ("event",)),
    ATTEMPTS: ("Delivery attempts by outcome.", ("outcome",)),
    DELIVERIES_FINISHED: ("Deliveries that reached a final state.", ("state",)),
    SUBSCRIPTIONS_AUTO_DISABLED: ("Subscriptions the service made inactive.", ("reason",)),
}

Labels = tuple[tuple[str, str], ...]


def _encode(labels: Labels) -> str:
    return ",".join(f"{key}={value}" for key, value in labels)


@functools.lru_cache(maxsize=1024)
def _encode_labels(labels: Labels) -> str:
    """The stored form of labels given in any order (counters are incremented per attempt)."""
    return _encode(tuple(sorted(labels)))


def _decode(encoded: str) -> Labels:
    if not encoded:
        return ()
    return tuple(tuple(part.split("=", 1)) for part in encoded.split(","))  # type: ignore[misc]


FLUSH_STATEMENT = (
    "INSERT INTO metric_counters (name, labels, value) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::float8[]) "
    "ON CONFLICT (name, labels) "
    "DO UPDATE SET value = metric_counters.value + excluded.value"
)


class SharedCounters:
    """In-memory increments of this process, flushed to the shared table."""

    def __init__(self) -> None:
        self._pending: defaultdict[tuple[str, str], float] = defaultdict(float)

    def increment(self, name: str, amount: float = 1.0, **labels: str) -> None:
        self._pending[(name, _encode_labels(tuple(labels.items())))] += amount

    def observe_duration(self, seconds: float) -> None:
        # Stored per bucket, not cumulated: one increment per observation (hot path).
        index = bisect.bisect_left(DURATION_BUCKETS, seconds)
        self._pending[(_BUCKET, _BUCKET_LABELS[index])] += 1
        self._pending[(_SUM, "")] += seconds

    def pending(self) -> dict[tuple[str, str], float]:
        return dict(self._pending)

    def discard(self) -> None:
        """Forget what is not flushed yet (a test whose database was emptied under it)."""
        self._pending.clear()

    async def flush(self, connection: asyncpg.Connection) -> None:
        if not self._pending:
            return
        taken, self._pending = self._pending, defaultdict(float)
        keys = sorted(taken)  # one lock order for every process
        try:
            await connection.execute(
                FLUSH_STATEMENT,
                [name for name, _ in keys],
                [labels for _, labels in keys],
                [taken[key] for key in keys],
            )
        except BaseException:
            for key, value in taken.items():
                self._pending[key] += value
            raise

    async def flush_forever(
        self,
        acquire: Callable[[], AbstractAsyncContextManager[asyncpg.Connection]],
        interval: float = 1.0,
    ) -> None:
        while True:
            await asyncio.sleep(interval)
            # An outage is logged by whoever meets it first; counts wait for the next flush.
            with contextlib.suppress(*DATABASE_ERRORS):
                async with acquire() as connection:
                    await self.flush(connection)


counters = SharedCounters()


class _Snapshot:
    def __init__(
        self,
        totals: dict[tuple[str, str], float],
        due: int,
        oldest_due_age: float,
        in_flight: int,
    ) -> None:
        self.totals = totals
        self.due = due
        self.oldest_due_age = oldest_due_age
        self.in_flight = in_flight

    def collect(self) -> Iterator[Metric]:
        for name, (documentation, label_names) in _COUNTERS.items():
            family = CounterMetricFamily(name, documentation, labels=list(label_names))
            for (counter, encoded), value in sorted(self.totals.items()):
                if counter == name:
                    labels = dict(_decode(encoded))
                    family.add_metric([labels.get(label, "") for label in label_names], value)
            yield family
        buckets = []
        cumulative = 0.0
        for bucket in _BUCKET_LABELS:
            cumulative += self.totals.get((_BUCKET, bucket), 0.0)
            buckets.append((bucket.removeprefix("le="), cumulative))
        histogram = HistogramMetricFamily(
            ATTEMPT_DURATION, "Duration of delivery attempts, request to answer or error."
        )
        histogram.add_metric([], buckets, sum_value=self.totals.get((_SUM, ""), 0.0))
        yield histogram
        yield GaugeMetricFamily(
            "voicehooks_backlog_due", "Deliveries due now and not yet sent.", value=self.due
        )
        yield GaugeMetricFamily(
            "voicehooks_backlog_oldest_due_age_seconds",
            "How long the oldest due delivery has waited.",
            value=self.oldest_due_age,
        )
        yield GaugeMetricFamily(
            "voicehooks_deliveries_in_flight",
            "Deliveries claimed by a worker and being sent.",
            value=self.in_flight,
        )


async def render_metrics(engine: AsyncEngine) -> bytes:
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT name, labels, value FROM metric_counters"))
        totals: dict[tuple[str, str], float] = {(r.name, r.labels): r.value for r in rows}
        backlog = (
            await connection.execute(
                text(
                    # Due: its time has come and no worker holds it (or its lease ran out).
                    # Queued deliveries only: one waiting behind an earlier one is not due.
                    "WITH queued AS (SELECT due_at, claim_token IS NOT NULL AND due_at > now() "
                    "AS held FROM delivery_queue) "
                    "SELECT count(*) FILTER (WHERE due_at <= now()) AS due, "
                    "COALESCE(EXTRACT(EPOCH FROM now() - min(due_at) FILTER (WHERE NOT held)), 0)"
                    " AS oldest, count(*) FILTER (WHERE held) AS in_flight FROM queued"
                )
            )
        ).one()
    for key, value in counters.pending().items():
        totals[key] = totals.get(key, 0.0) + value
    registry = CollectorRegistry(auto_describe=False)
    oldest = max(float(backlog.oldest), 0.0)
    registry.register(_Snapshot(totals, backlog.due, oldest, backlog.in_flight))
    return generate_latest(registry)
