"""Apply Alembic migrations from code (the CLI, `serve` at start, the test session)."""

import functools

from alembic import command
from alembic.config import Config

from voicehooks.db.engine import create_engine
from voicehooks.encryption import KeyRing

# Where migrations find the key ring that encrypts signing keys (see 0002), in
# Config.attributes: a live object, never written into the configuration's text.
KEY_RING_ATTRIBUTE = "key_ring"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", "voicehooks.db:migrations")
    return config


async def upgrade(
    database_url: str, *, key_ring: KeyRing | None = None, revision: str = "head"
) -> None:
    """Migrate to `revision`; `key_ring` is needed when there are signing keys to encrypt."""
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(
                functools.partial(_upgrade_on, key_ring=key_ring, revision=revision)
            )
    finally:
        await engine.dispose()


def _upgrade_on(connection: object, *, key_ring: KeyRing | None, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    config.attributes[KEY_RING_ATTRIBUTE] = key_ring
    command.upgrade(config, revision)
