"""Engine and session factory: one place that knows how to reach the database."""

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence

import asyncpg
from sqlalchemy import QueuePool, event
from sqlalchemy.engine.interfaces import AdaptedConnection
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from voicehooks.db.urls import libpq_url, sqlalchemy_url

# Connections of an API process: requests beyond it wait for one (see fill_pool).
API_POOL_SIZE = 20
# A database that drops packets must not hold a start-up (or a request) for asyncpg's 60 s.
CONNECT_TIMEOUT = 10.0


async def look_up_types(connection: asyncpg.Connection, statements: Iterable[str]) -> None:
    """Have asyncpg look up the types of hot statements on a new connection, before use.

    asyncpg resolves a statement's array types (all but text[]) with a catalog query, once per
    connection and type: 15-30 ms of server CPU each on a small machine. Done when the
    connection opens, it never falls on a request or a claim.
    """
    for statement in statements:
        await connection.prepare(statement)


# The session settings of every connection of the API and the worker.
# - JIT pays off for long analytical queries only; on the service's short statements a stale
#   estimate can make it compile for hundreds of milliseconds.
# - Every statement is planned for the tables as they are when it runs. The plan a prepared
#   statement keeps after five runs (Postgres's default) is costed for the tables of that
#   moment: on an idle service, that is a queue VACUUM has just cut back to no page at all,
#   where reading it whole costs nothing, so the kept plan read the whole queue for every row
#   of every claim and result once the next burst came (a claim of 250 on a 100k-row queue
#   took 670-800 ms instead of 2-3 ms, after an idle spell with a 20k-row or a 10-row queue
#   before; e2e after an idle VACUUM ANALYZE 0.42-0.62 of before it). Planned as they run,
#   the statements see the queue's real size, and their index walks are the cheapest path
#   (tests/delivery/test_query_plans.py). Not a planner override: no path is turned off.
SESSION_SETTINGS: Mapping[str, str] = {"jit": "off", "plan_cache_mode": "force_custom_plan"}


def rows_affected(status: str) -> int:
    """Rows a statement changed, from asyncpg's status string ("UPDATE 3")."""
    return int(status.rsplit(" ", 1)[-1])


def create_engine(
    database_url: str, *, pool_size: int = API_POOL_SIZE, hot_statements: Sequence[str] = ()
) -> AsyncEngine:
    """An engine whose every new connection (also one replacing a lost one) has looked up the
    types of `hot_statements`."""
    # asyncpg reads the libpq URL itself, query options (sslmode, application_name, …)
    # included; SQLAlchemy would pass those on as keyword arguments asyncpg does not take.
    dsn = libpq_url(database_url)

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(
            dsn, timeout=CONNECT_TIMEOUT, server_settings=dict(SESSION_SETTINGS)
        )

    engine = create_async_engine(
        sqlalchemy_url(database_url).set(query={}),
        async_creator=connect,
        pool_size=pool_size,
        # No overflow: connections beyond the pool would be opened under load and closed
        # right after (a new server process each time), which is when load is worst for it.
        max_overflow=0,
        hide_parameters=True,  # statement parameters carry keys; errors must not show them
    )
    if hot_statements:
        # After SQLAlchemy's own set-up of the connection: its codec settings drop what
        # asyncpg has looked up so far.
        @event.listens_for(engine.sync_engine, "connect")
        def prepare_new_connection(dbapi_connection: AdaptedConnection, _: object) -> None:
            dbapi_connection.run_async(functools.partial(look_up_types, statements=hot_statements))

    return engine


async def fill_pool(engine: AsyncEngine) -> None:
    """Open every connection of the engine's pool now, before the first request.

    A connection opened on demand costs a server process, SQLAlchemy's set-up statements and
    asyncpg's type lookups: tens of milliseconds of both CPUs of a small machine. Opened
    under a burst of requests, many at once, they stall every request for hundreds of
    milliseconds; opened at start, they are kept by the pool. Raises the first failure
    (after returning the connections that did open).
    """
    size = engine.pool.size() if isinstance(engine.pool, QueuePool) else 1
    opened = await asyncio.gather(
        *(engine.connect().start() for _ in range(size)), return_exceptions=True
    )
    for outcome in opened:
        if isinstance(outcome, AsyncConnection):
            await outcome.close()
    for outcome in opened:
        if isinstance(outcome, BaseException):
            raise outcome


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def session_driver_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under a session, inside the session's transaction.

    For hot statements written for asyncpg: they skip SQLAlchemy's per-statement work and
    still commit or roll back with the session.
    """
    return await _driver(await session.connection())


async def _driver(connection: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under `connection`, with the database transaction begun.

    SQLAlchemy's asyncpg adapter sends BEGIN lazily, with its own first statement. Statements
    run on the driver before that would each commit on their own (an event visible without
    its deliveries), so one cheap statement through SQLAlchemy begins the transaction first.
    """
    raw = await connection.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    if not driver.is_in_transaction():
        await connection.exec_driver_sql("SELECT 1")
    return driver


@contextlib.asynccontextmanager
async def raw_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """The pooled asyncpg connection under SQLAlchemy, for statements written for asyncpg."""
    async with engine.connect() as connection:
        yield await _driver(connection)
        await connection.commit()


@contextlib.asynccontextmanager
async def pooled_driver(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A pooled asyncpg connection with no transaction begun, for a caller that runs its own
    (asyncpg's `transaction()`): no SQLAlchemy work per statement, nor a `SELECT 1` to begin.

    A connection the caller found broken is not given back to the pool for reuse.
    """
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver: asyncpg.Connection = raw.driver_connection
        try:
            yield driver
        finally:
            if driver.is_closed():
                await connection.invalidate()
