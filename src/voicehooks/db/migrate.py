"""Apply Alembic migrations from code (the CLI, `serve` at start, the test session)."""

import functools
from dataclasses import dataclass
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

from voicehooks.db.engine import create_engine
from voicehooks.encryption import KeyRing

# Where migrations find the key ring that encrypts signing keys (see 0002), in
# Config.attributes: a live object, never written into the configuration's text.
KEY_RING_ATTRIBUTE = "key_ring"


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


async def upgrade(
    database_url: str, *, key_ring: KeyRing | None = None, revision: str = "head"
) -> Migrated:
    """Migrate to `revision`; `key_ring` is needed when there are signing keys to encrypt."""
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(
                functools.partial(_upgrade_on, key_ring=key_ring, revision=revision)
            )
    finally:
        await engine.dispose()


def _upgrade_on(connection: Any, *, key_ring: KeyRing | None, revision: str) -> Migrated:
    before = MigrationContext.configure(connection).get_current_revision()
    config = alembic_config()
    config.attributes["connection"] = connection
    config.attributes[KEY_RING_ATTRIBUTE] = key_ring
    command.upgrade(config, revision)
    return Migrated(before, MigrationContext.configure(connection).get_current_revision())
