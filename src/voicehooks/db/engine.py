"""Engine and session factory: one place that knows how to reach the database."""

import contextlib
from collections.abc import AsyncIterator

import asyncpg
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from voicehooks.db.urls import libpq_url, sqlalchemy_url


def create_engine(database_url: str, *, pool_size: int = 20) -> AsyncEngine:
    # asyncpg reads the libpq URL itself, query options (sslmode, application_name, …)
    # included; SQLAlchemy would pass those on as keyword arguments asyncpg does not take.
    dsn = libpq_url(database_url)

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(dsn)

    return create_async_engine(
        sqlalchemy_url(database_url).set(query={}),
        async_creator=connect,
        pool_size=pool_size,
        # No overflow: connections beyond the pool would be opened under load and closed
        # right after (a new server process each time), which is when load is worst for it.
        max_overflow=0,
        hide_parameters=True,  # statement parameters carry keys; errors must not show them
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def session_driver_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under a session, inside the session's transaction.

    For hot statements written for asyncpg: they skip SQLAlchemy's per-statement work and
    still commit or roll back with the session.
    """
    return await _driver(await session.connection())


async def _driver(connection: AsyncConnection) -> asyncpg.Connection:
    raw = await connection.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    return driver


@contextlib.asynccontextmanager
async def raw_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """The pooled asyncpg connection under SQLAlchemy, for statements written for asyncpg."""
    async with engine.connect() as connection:
        yield await _driver(connection)
        await connection.commit()
