"""Engine and session factory: one place that knows how to reach the database."""

import contextlib
from collections.abc import AsyncIterator

import asyncpg
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from voicehooks.db.urls import libpq_url, sqlalchemy_url


def create_engine(database_url: str, *, pool_size: int = 10) -> AsyncEngine:
    # asyncpg reads the libpq URL itself, query options (sslmode, application_name, …)
    # included; SQLAlchemy would pass those on as keyword arguments asyncpg does not take.
    dsn = libpq_url(database_url)

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(dsn)

    return create_async_engine(
        sqlalchemy_url(database_url).set(query={}),
        async_creator=connect,
        pool_size=pool_size,
        max_overflow=pool_size,
        hide_parameters=True,  # statement parameters carry keys; errors must not show them
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@contextlib.asynccontextmanager
async def raw_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """The pooled asyncpg connection under SQLAlchemy, for statements written for asyncpg."""
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        yield raw.driver_connection
        await connection.commit()
