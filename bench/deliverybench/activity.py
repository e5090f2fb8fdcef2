"""What the bench database's server processes were doing during a phase: pg_stat_activity
sampled at a fixed interval (by statement, state and wait), and which tables autovacuum
vacuumed or analyzed meanwhile. A phase that took more Postgres CPU than its siblings shows
here which statement (or autovacuum run) took it."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

INTERVAL_S = 0.05
TOP = 8

_SAMPLE_SQL = """
SELECT backend_type, state, coalesce(wait_event_type || ':' || wait_event, 'cpu') AS wait,
       query, extract(epoch FROM clock_timestamp() - query_start) AS running_s,
       greatest(age(backend_xmin), age(backend_xid)) AS holds_xids
FROM pg_stat_activity
WHERE datname = $1 AND pid <> pg_backend_pid() AND state IS DISTINCT FROM 'idle'
"""

_TABLES_SQL = """
SELECT relname, autovacuum_count, autoanalyze_count, n_live_tup, n_dead_tup
FROM pg_stat_user_tables
"""

_SPACES = re.compile(r"\s+")


def _statement(query: str) -> str:
    """A statement's first words, enough to tell the service's statements apart."""
    return _SPACES.sub(" ", query).strip()[:90]


class ActivitySampler:
    def __init__(self, database: str) -> None:
        self.database = database
        self.samples = 0
        self.seen: Counter[tuple[str, str, str]] = Counter()
        self.longest: dict[str, float] = {}
        # The process that held the xmin horizon furthest back: while it does, no dead row
        # version newer than its snapshot can be removed or skipped for good (a queue's
        # index walks then step over every version its churn left since).
        self.horizon: dict[str, Any] = {"xids": 0}

    async def run(self, conn: asyncpg.Connection, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            rows = await conn.fetch(_SAMPLE_SQL, self.database)
            self.samples += 1
            for row in rows:
                statement = _statement(row["query"] or "")
                kind = "" if row["backend_type"] == "client backend" else row["backend_type"]
                self.seen[(kind, statement, f"{row['state']}/{row['wait']}")] += 1
                running = float(row["running_s"] or 0.0)
                if running > self.longest.get(statement, 0.0):
                    self.longest[statement] = running
                holds = int(row["holds_xids"] or 0)
                if holds > self.horizon["xids"]:
                    self.horizon = {
                        "xids": holds,
                        "process": kind or "client",
                        "statement": statement,
                        "state": row["state"],
                        "running_s": round(running, 3),
                    }
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    stop.wait(), max(0.0, INTERVAL_S - (time.monotonic() - started))
                )

    def report(self, tables_before: dict, tables_after: dict) -> dict[str, Any]:
        """Each (process kind, statement, state/wait) as busy processes on average over the
        phase (samples seen / samples taken), and tables autovacuum touched."""
        top = [
            {
                "busy": round(count / self.samples, 2),
                "process": kind or "client",
                "statement": statement,
                "state": state,
                "longest_s": round(self.longest.get(statement, 0.0), 3),
            }
            for (kind, statement, state), count in self.seen.most_common(TOP)
        ]
        autovacuum = {}
        for name, after in tables_after.items():
            before = tables_before.get(name, (0, 0))
            vacuums, analyzes = after[0] - before[0], after[1] - before[1]
            if vacuums or analyzes:
                autovacuum[name] = {"vacuums": vacuums, "analyzes": analyzes}
        return {
            "samples": self.samples,
            "top": top,
            "autovacuum": autovacuum,
            "oldest_horizon": self.horizon,
        }


async def _table_counts(conn: asyncpg.Connection) -> dict[str, tuple[int, int]]:
    rows = await conn.fetch(_TABLES_SQL)
    return {r["relname"]: (r["autovacuum_count"], r["autoanalyze_count"]) for r in rows}


@contextlib.asynccontextmanager
async def sampled(dsn: str, database: str) -> AsyncIterator[dict[str, Any]]:
    """Samples while the block runs; the dict it yields gets the report afterwards (empty
    when the database cannot be reached: the figures never depend on this)."""
    report: dict[str, Any] = {}
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError):
        yield report
        return
    sampler = ActivitySampler(database)
    stop = asyncio.Event()
    try:
        # One connection: the table counts are read before the sampling starts and after it.
        tables_before = await _table_counts(conn)
        task = asyncio.create_task(sampler.run(conn, stop))
        try:
            yield report
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await task
        # Statistics reach pg_stat_user_tables when a backend reports them: a moment later.
        await asyncio.sleep(0.6)
        tables_after = await _table_counts(conn)
        report.update(sampler.report(tables_before, tables_after))
    finally:
        await conn.close()
