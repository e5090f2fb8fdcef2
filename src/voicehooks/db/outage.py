"""Database outages: which errors mean "the database cannot be reached", logged once per outage.

Every process meets an outage through many call sites at once (each request, the claim loop,
the recorder, the listener). They all ask `is_outage` what an error means and report to one
`OutageLog`, so an outage is one WARNING when it starts and one INFO line when it ends, not a
traceback per request.
"""

import time
from collections.abc import Iterator

import asyncpg
import structlog
from sqlalchemy import exc as sa_exc

# What talking to the database through asyncpg raises when it fails: to be told apart by
# `is_outage` (an outage) from a statement of ours that is wrong.
DRIVER_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    # A connection asyncpg finds in a broken state (the dispatcher then drops it).
    asyncpg.InternalClientError,
)
# The same through SQLAlchemy, which wraps them (or times out waiting for a pooled connection).
DATABASE_ERRORS: tuple[type[Exception], ...] = (
    *DRIVER_ERRORS,
    sa_exc.DBAPIError,
    sa_exc.TimeoutError,
)

# What a client should wait before trying again: a restart refuses connections for seconds.
RETRY_AFTER_SECONDS = 2

# SQLSTATEs of a server that is going away, starting up or full: connection_exception (class
# 08), admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections.
_OUTAGE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error and what it wraps: SQLAlchemy's `orig`, then the exception chain."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for inner in (getattr(current, "orig", None), current.__cause__, current.__context__):
            if isinstance(inner, BaseException):
                pending.append(inner)


def _one_is_outage(error: BaseException) -> bool:
    if isinstance(error, OSError | sa_exc.TimeoutError):
        # Refused, reset, unreachable, timed out (TimeoutError is an OSError), or no pooled
        # connection came free in time.
        return True
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(
        error, asyncpg.exceptions.ConnectionDoesNotExistError | asyncpg.InternalClientError
    ):
        # Lost, or left mid-operation by a loss (seen when the server restarts under load):
        # either way the connection is gone, and its pool opens another.
        return True
    if isinstance(error, asyncpg.InterfaceError):
        # "connection is closed" and its kin; other interface errors are bugs of ours.
        return "closed" in str(error)
    sqlstate = getattr(error, "sqlstate", None)
    return isinstance(sqlstate, str) and (
        sqlstate.startswith("08") or sqlstate in _OUTAGE_SQLSTATES
    )


def is_outage(error: BaseException) -> bool:
    """True when `error` says the database cannot be reached now (not that a statement is wrong)."""
    return any(_one_is_outage(cause) for cause in _causes(error))


class OutageLog:
    """Turns many failures and successes of one process into one line per outage and recovery."""

    def __init__(self) -> None:
        self._log = structlog.get_logger("voicehooks.database")
        self._down_since: float | None = None

    def failed(self, error: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            # The type names the cause; messages may carry host names but never credentials.
            self._log.warning("database_unavailable", error=type(error).__name__)

    def succeeded(self, began: float) -> None:
        """An operation that `began` (`time.monotonic()`) at that moment reached the database.

        Only one begun after the outage was noticed ends it: when a server goes down, work it
        took just before still completes while its neighbours already fail, and that says
        nothing about now (the outage would be logged twice, with a recovery between)."""
        if self._down_since is not None and began > self._down_since:
            seconds = round(time.monotonic() - self._down_since, 1)
            self._down_since = None
            self._log.info("database_available", outage_seconds=seconds)


# An outage is a fact about the process (API and dispatcher share it in `serve`): one log.
outages = OutageLog()
