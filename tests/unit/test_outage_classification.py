"""Which errors count as a database outage (503, one log line) and which are faults of ours;
how an outage is logged."""

import time

import asyncpg
import pytest
import structlog
from sqlalchemy import exc as sa_exc

from voicehooks.db.outage import OutageLog, is_outage


def _wrapped(error: Exception, *, invalidated: bool = False) -> sa_exc.DBAPIError:
    """As SQLAlchemy raises a driver error: wrapped, the original in `orig` and the chain."""
    try:
        raise sa_exc.DBAPIError("SELECT 1", None, error, connection_invalidated=invalidated)
    except sa_exc.DBAPIError as wrapped:
        wrapped.__cause__ = error
        return wrapped


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle"),
        asyncpg.InterfaceError("cannot perform operation: connection is closed"),
        # A connection a server restart left mid-operation.
        asyncpg.InternalClientError("cannot switch to state 15; another operation in progress"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator"),
        asyncpg.exceptions.CrashShutdownError("terminating connection: crash"),
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.exceptions.ConnectionFailureError("connection failure"),
        sa_exc.TimeoutError("QueuePool limit of size 20 overflow 0 reached"),
        _wrapped(asyncpg.InterfaceError("connection is closed")),
        _wrapped(Exception("anything"), invalidated=True),
    ],
    ids=type,
)
def test_connection_failures_are_outages(error):
    assert is_outage(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.UndefinedTableError('relation "events" does not exist'),
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        _wrapped(asyncpg.exceptions.SyntaxOrAccessError("syntax error")),
        ValueError("not a database error"),
    ],
    ids=type,
)
def test_faults_of_ours_are_not_outages(error):
    assert not is_outage(error)


def test_an_outage_is_one_warning_though_work_begun_before_it_still_completes() -> None:
    """A server going down fails some operations while others it took just before still
    complete: those say nothing about now, so the outage stays one WARNING; work begun after
    the failure that succeeds ends it with one INFO line."""
    log = OutageLog()
    with structlog.testing.capture_logs() as lines:
        before = time.monotonic()
        log.failed(asyncpg.InternalClientError("cannot switch to state 15"))
        log.succeeded(before)  # in flight when the server went down
        log.failed(asyncpg.InterfaceError("connection is closed"))
        log.succeeded(time.monotonic())  # the server is back
        log.succeeded(time.monotonic())
    assert [(line["log_level"], line["event"]) for line in lines] == [
        ("warning", "database_unavailable"),
        ("info", "database_available"),
    ]
    assert lines[0]["error"] == "InternalClientError"
