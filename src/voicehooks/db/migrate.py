"""Apply Alembic migrations from code (the CLI, `serve` at start, the test session)."""

from alembic import command
from alembic.config import Config

from voicehooks.db.engine import create_engine


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", "voicehooks.db:migrations")
    return config


async def upgrade(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade_on)
    finally:
        await engine.dispose()


def _upgrade_on(connection: object) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
