import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from voicehooks.db.engine import create_engine
from voicehooks.db.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    # Run by the `alembic` command (developers): settings from the environment.
    from voicehooks.config import Settings
    from voicehooks.db.migrate import KEY_RING_ATTRIBUTE

    settings = Settings()
    if settings.encryption_keys is not None:
        config.attributes.setdefault(KEY_RING_ATTRIBUTE, settings.key_ring())
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        if settings.database_url is None:
            raise SystemExit("set VOICEHOOKS_DATABASE_URL to run migrations")
        url = settings.database_url.get_secret_value()
    asyncio.run(_run_async(url))


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported")
run_migrations_online()
