#!/usr/bin/env python3
"""`voicehooks worker` with every asyncpg statement timed (bench/delivery.py --profile).

Wraps asyncpg's Connection.fetch/fetchval/fetchrow/execute, then runs the worker command as
usual. When the worker ends (SIGTERM), writes per-statement counts, wall time and returned
rows as JSON to $BENCH_QUERY_STATS; SIGUSR1 writes and resets a snapshot
(<path>.snapshot), so that a caller can cut the measurement into phases. Wall time is as the
worker sees it: round trip, waits for locks and Postgres CPU included.
"""

import atexit
import functools
import json
import os
import re
import signal
import sys
import time
from collections import defaultdict
from typing import Any

import asyncpg

_STATS: defaultdict[str, dict[str, float]] = defaultdict(
    lambda: {"calls": 0, "seconds": 0.0, "rows": 0, "max_ms": 0.0}
)
_STARTED = time.monotonic()


def _label(query: str) -> str:
    """A short name of a statement: its first meaningful words."""
    text = re.sub(r"\s+", " ", query).strip()
    if text.startswith("WITH candidates"):
        return "claim (WITH candidates … UPDATE deliveries)"
    return text[:70]


def _wrap(name: str) -> None:
    original = getattr(asyncpg.connection.Connection, name)

    @functools.wraps(original)
    async def timed(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = None
        try:
            result = await original(self, query, *args, **kwargs)
            return result
        finally:
            elapsed = time.perf_counter() - started
            entry = _STATS[_label(query)]
            entry["calls"] += 1
            entry["seconds"] += elapsed
            entry["max_ms"] = max(entry["max_ms"], elapsed * 1000)
            if isinstance(result, list):
                entry["rows"] += len(result)

    setattr(asyncpg.connection.Connection, name, timed)


def _dump(suffix: str = "") -> None:
    global _STARTED
    path = os.environ.get("BENCH_QUERY_STATS")
    if not path:
        return
    ordered = dict(sorted(_STATS.items(), key=lambda item: -item[1]["seconds"]))
    with open(path + suffix, "w") as out:
        json.dump({"wall_s": time.monotonic() - _STARTED, "statements": ordered}, out, indent=2)
    _STATS.clear()
    _STARTED = time.monotonic()


def _snapshot(*_: object) -> None:
    """SIGUSR1: write what was measured since the last snapshot to <path>.snapshot, reset."""
    _dump(".snapshot")


def main() -> None:
    for name in ("fetch", "fetchval", "fetchrow", "execute"):
        _wrap(name)
    atexit.register(_dump)
    signal.signal(signal.SIGUSR1, _snapshot)
    from voicehooks.cli import app

    sys.argv = ["voicehooks", *sys.argv[1:]]
    app()


if __name__ == "__main__":
    main()
