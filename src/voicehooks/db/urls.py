"""Database URL forms: users give libpq URLs, SQLAlchemy and asyncpg each want their own."""

from sqlalchemy.engine import URL, make_url


def sqlalchemy_url(url: str) -> URL:
    """`postgresql://…` or `postgresql+asyncpg://…` → a URL for SQLAlchemy's asyncpg dialect."""
    parsed = make_url(url)
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise ValueError("VOICEHOOKS_DATABASE_URL must be a postgresql:// URL")
    return parsed.set(drivername="postgresql+asyncpg")


def libpq_url(url: str) -> str:
    """The plain `postgresql://…` form that asyncpg.connect understands."""
    return sqlalchemy_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def display_url(url: str) -> str:
    """Where the URL points, for people: no password, no query (it may hold one too)."""
    parsed = sqlalchemy_url(url)
    shown = URL.create(
        "postgresql", parsed.username, None, parsed.host, parsed.port, parsed.database
    )
    return shown.render_as_string(hide_password=False)
