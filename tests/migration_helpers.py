"""Databases at an older Alembic revision, and the rows every revision stores alike, for the
tests of the migrations that follow it."""

import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg

from tests.support import new_database
from voicehooks.db.migrate import upgrade


@contextlib.asynccontextmanager
async def database_at(server_url: str, prefix: str, revision: str) -> AsyncIterator[str]:
    """A fresh database migrated up to `revision` and no further; dropped afterwards."""
    async with new_database(server_url, prefix) as url:
        await upgrade(url, revision=revision)
        yield url


async def insert_organization_and_workspace(
    connection: asyncpg.Connection, organization: uuid.UUID, workspace: uuid.UUID
) -> None:
    """Organization 'migrated' with its workspace 'main' (the same columns since 0001)."""
    await connection.execute(
        "INSERT INTO organizations (id, name) VALUES ($1, 'migrated')", organization
    )
    await connection.execute(
        "INSERT INTO workspaces (id, organization_id, name) VALUES ($1, $2, 'main')",
        workspace,
        organization,
    )
