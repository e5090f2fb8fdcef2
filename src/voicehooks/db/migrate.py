"""Apply Alembic migrations from code (the CLI, `serve` at start, the test session)."""

import asyncio
from dataclasses import dataclass
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

from voicehooks.db.engine import create_engine


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", "voicehooks.db:migrations")
    return config


@dataclass(frozen=True)
class Migrated:
    """The schema revision before and after an upgrade (None: no schema yet)."""

    before: str | None
    after: str | None

    def describe(self) -> str:
        if self.before == self.after:
            return f"schema already current (revision {self.after})"
        return f"schema migrated from {self.before or 'nothing'} to revision {self.after}"


async def upgrade(database_url: str) -> Migrated:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(_upgrade_on)
    finally:
        await engine.dispose()


def _upgrade_on(connection: Any) -> Migrated:
    before = MigrationContext.configure(connection).get_current_revision()
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
    return Migrated(before, MigrationContext.configure(connection).get_current_revision())


def upgrade_blocking(database_url: str) -> Migrated:
    return asyncio.run(upgrade(database_url))
