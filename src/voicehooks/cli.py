"""The `voicehooks` command: serve, api, worker, migrate, bootstrap, rotate-encryption-key."""

import asyncio
import contextlib
import gc
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Annotated, Any

import structlog
import typer
import uvicorn
import uvloop

import voicehooks
from voicehooks.config import Settings
from voicehooks.db.embedded import embedded_postgres, pgdata_path
from voicehooks.db.urls import display_url
from voicehooks.encryption import EncryptionConfigError
from voicehooks.encryption_keys import with_encryption_keys
from voicehooks.listen import listen
from voicehooks.observability.logging import configure_logging
from voicehooks.trigger import trigger

app = typer.Typer(
    help="Webhook subscriptions for voice call life-cycle events. Settings come from "
    "VOICEHOOKS_* environment variables; with VOICEHOOKS_DATABASE_URL unset, every command "
    "that needs the database starts an embedded PostgreSQL.",
    no_args_is_help=True,
)


def _version(show: bool) -> None:
    if show:
        typer.echo(f"voicehooks {voicehooks.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    pass


# What each command's --help says about the environment variables it reads.
_DATABASE_HELP = (
    "Database: VOICEHOOKS_DATABASE_URL (postgresql://user:pass@host:port/db). When it is "
    "unset, this command starts an embedded PostgreSQL in VOICEHOOKS_DATA_DIR (default: "
    f"{Settings.model_fields['data_dir'].get_default(call_default_factory=True)}), shared "
    "with the other commands run on that directory."
)
_INGEST_HELP = (
    "Ingestion: VOICEHOOKS_INGEST_TOKEN, the Bearer token of POST /internal/v1/events "
    "(unset: ingestion answers 401)."
)


def _announce(message: str) -> None:
    """One line for the person who started the command, as a log line: readable text on a
    terminal, and a JSON line like every other one when stderr is a pipe or a file."""
    structlog.get_logger("voicehooks.cli").info(message)


def _describe_database(settings: Settings) -> str:
    if settings.database_url is None:
        return f"embedded at {pgdata_path(settings.data_dir.expanduser().resolve())}"
    return display_url(settings.database_url.get_secret_value())


# Collections of the youngest generation every 20,000 net allocations instead of 700.
GC_THRESHOLDS = (20_000, 20, 50)

Host = Annotated[str, typer.Option(help="Interface to listen on.")]
Port = Annotated[int, typer.Option(help="Port to listen on.")]


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[str]:
    """VOICEHOOKS_DATABASE_URL, or an embedded PostgreSQL when it is unset."""
    if settings.database_url is not None:
        yield settings.database_url.get_secret_value()
        return
    with embedded_postgres(settings.data_dir) as url:
        yield url


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the command decides how to stop."""

    def __init__(self, config: uvicorn.Config, on_listening: Callable[[str], None]) -> None:
        super().__init__(config)
        self._on_listening = on_listening

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            self._on_listening(f"http://{f'[{host}]' if ':' in host else host}:{port}")


async def _run(
    settings: Settings,
    database_url: str,
    *,
    api: tuple[str, int] | None,
    worker: bool,
    processes: int = 1,
    listening: socket.socket | None = None,
    announce: bool = True,
    parent: int | None = None,
) -> None:
    from voicehooks.dispatch.worker import Dispatcher

    tasks = []
    server = None
    dispatcher = None
    if api is not None:
        # Imported here: `voicehooks worker` runs without the web framework loaded.
        from voicehooks.api.app import create_app

        config = uvicorn.Config(
            create_app(settings, database_url),
            host=api[0],
            port=api[1],
            access_log=False,
            log_config=None,
            lifespan="on",
        )
        database = _describe_database(settings)
        what = "API and dispatcher" if worker else "API"
        if processes > 1:
            what = f"API in {processes} processes"

        def listening_on(url: str) -> None:
            if announce:
                _announce(f"{what} listening on {url} (database: {database})")

        server = _Server(config, listening_on)
        sockets = None if listening is None else [listening]
        tasks.append(asyncio.create_task(server.serve(sockets)))
    if worker:
        dispatcher = Dispatcher(settings, database_url)
        tasks.append(asyncio.create_task(dispatcher.run()))
        if api is None:
            _announce(
                f"dispatcher running in {processes} process{'es' if processes > 1 else ''} "
                f"(database: {_describe_database(settings)})"
            )

    def stop() -> None:
        if server is not None:
            server.should_exit = True
        if dispatcher is not None:
            dispatcher.stop()

    _settle_garbage_collector()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    if parent is not None:
        watch = asyncio.create_task(_stop_when_gone(parent, stop))
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    stop()  # one part ending (or failing) ends the process
    if parent is not None:
        watch.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


# A sibling process's first process, which it stops with (hidden: `_siblings` passes it).
_SiblingOf = Annotated[
    int | None, typer.Option(hidden=True, help="The process this one was started beside.")
]
PARENT_CHECK_SECONDS = 0.5


async def _stop_when_gone(parent: int, stop: Callable[[], None]) -> None:
    """Stop once the first process is gone. It stops its siblings when it stops, but not when
    it is killed (kill -9, the OOM killer): an orphaned API process would go on serving its
    share of the port with the old code and settings beside a restarted one, an orphaned
    dispatcher would hold its in-flight slots. The parent is polled, as no signal reaches a
    process when its parent dies unless it asked the kernel for one (Linux only)."""
    while os.getppid() == parent:  # noqa: ASYNC110 - nothing to wait on but the pid
        await asyncio.sleep(PARENT_CHECK_SECONDS)
    stop()


def _run_service(main: Coroutine[Any, Any, None]) -> None:
    """Run a long-lived service on uvloop: its transports cost about half the CPU per request
    of the standard event loop, and requests are the hot path of both API and dispatcher."""
    uvloop.run(main)


def _settle_garbage_collector() -> None:
    """Spare the hot paths most of the collector's work; called once the service is built.

    With the default thresholds, the collections that every few hundred allocations trigger
    took about an eighth of the dispatcher's CPU, mostly re-scanning the long-lived objects
    of the loaded modules and the app. Those are frozen out of the collector's sight, and
    collections run less often; reference cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _settings(*, encryption_keys_required: bool = True) -> Settings:
    """The settings, with the encryption keys resolved; a missing or malformed key ends the
    command with one line on stderr (never a traceback: it could show the value)."""
    settings = Settings()
    configure_logging(settings.log_level)
    try:
        return with_encryption_keys(settings, required=encryption_keys_required)
    except EncryptionConfigError as exc:
        typer.echo(f"voicehooks: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command(epilog=f"{_DATABASE_HELP}\n\n{_INGEST_HELP}")
def serve(host: Host = "127.0.0.1", port: Port = 8000) -> None:
    """API and dispatcher in one process; applies migrations first."""
    from voicehooks.db.migrate import upgrade

    settings = _settings()
    with _database(settings) as database_url:
        _announce(asyncio.run(upgrade(database_url, key_ring=settings.key_ring())).describe())
        _run_service(_run(settings, database_url, api=(host, port), worker=True))


@app.command(epilog=f"{_DATABASE_HELP}\n\n{_INGEST_HELP}")
def api(
    host: Host = "127.0.0.1",
    port: Port = 8000,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="API processes sharing the port (default: VOICEHOOKS_API_PROCESSES, 1); "
            "each uses at most one core.",
        ),
    ] = None,
    listen_fd: Annotated[
        int | None,
        typer.Option(hidden=True, help="A listening socket inherited from the first process."),
    ] = None,
    sibling_of: _SiblingOf = None,
) -> None:
    """The HTTP API alone (run `voicehooks migrate` first)."""
    settings = _settings()
    count = processes or settings.api_processes
    with _database(settings) as database_url:
        listening = None
        siblings: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if listen_fd is not None:  # a sibling: the first process announces and supervises
            listening = socket.socket(fileno=listen_fd)
        elif count > 1:
            listening, *others = _listening_sockets(host, port, count)
            siblings = _siblings(
                [(["api", "--listen-fd", str(other.fileno())], other) for other in others],
                settings,
                database_url,
            )
        with siblings:
            _run_service(
                _run(
                    settings,
                    database_url,
                    api=(host, port),
                    worker=False,
                    processes=count,
                    listening=listening,
                    announce=listen_fd is None,
                    parent=sibling_of,
                )
            )


def _listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """A listening socket per API process, all on one port (SO_REUSEPORT), so that the kernel
    spreads new connections across the processes evenly. With one shared socket, whichever
    process woke first accepted every connection waiting: clients that open their keep-alive
    connections together (as the voice platform's senders and the benchmark do) all landed
    on one process, which served 98 % of the requests of two (py-spy's samples per process
    in `bench/ingestion.py --profile`). The price: a connection the kernel gives a stalled
    process waits for it; a process that exits closes its socket, which takes it out."""
    # The address as uvicorn binds one process's (an IPv6 literal, else IPv4): `localhost`
    # stays 127.0.0.1 whatever order the resolver gives its addresses in.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    address: tuple[Any, ...] = (host, port)
    sockets = []
    for _ in range(count):
        listening = socket.socket(family, socket.SOCK_STREAM)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listening.bind(address)
        # Listening before the siblings start: what the kernel gives one waits in its queue.
        listening.listen(2048)
        address = listening.getsockname()  # port 0: the others take the port it was given
        sockets.append(listening)
    return sockets


@app.command(epilog=_DATABASE_HELP)
def worker(
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Dispatcher processes (default: VOICEHOOKS_WORKER_PROCESSES, 1); "
            "each uses at most one core.",
        ),
    ] = None,
    sibling_of: _SiblingOf = None,
) -> None:
    """The dispatcher alone: claims, sends and records deliveries."""
    settings = _settings()
    count = processes or settings.worker_processes
    with (
        _database(settings) as database_url,
        _siblings([(["worker", "--processes", "1"], None)] * (count - 1), settings, database_url),
    ):
        _run_service(
            _run(settings, database_url, api=None, worker=True, processes=count, parent=sibling_of)
        )


@contextlib.contextmanager
def _siblings(
    commands: list[tuple[list[str], socket.socket | None]],
    settings: Settings,
    database_url: str,
) -> Iterator[None]:
    """More processes of this command beside this one, each with its arguments and the
    socket it inherits, if any (closed here once passed on); they stop when this one stops."""
    env = {**os.environ, "VOICEHOOKS_DATABASE_URL": database_url}
    if settings.encryption_keys is not None:  # also the key file's key, in embedded mode
        env["VOICEHOOKS_ENCRYPTION_KEYS"] = settings.encryption_keys.get_secret_value()
    siblings = []
    for arguments, inherited in commands:
        command = [sys.executable, "-m", "voicehooks", *arguments, "--sibling-of", str(os.getpid())]
        fds = () if inherited is None else (inherited.fileno(),)
        siblings.append(subprocess.Popen(command, env=env, pass_fds=fds))  # noqa: S603
        if inherited is not None:
            inherited.close()
    try:
        yield
    finally:
        for sibling in siblings:
            sibling.send_signal(signal.SIGTERM)
        for sibling in siblings:
            sibling.wait()


@app.command(epilog=_DATABASE_HELP)
def migrate() -> None:
    """Apply database migrations."""
    from voicehooks.db.migrate import upgrade

    settings = _settings()
    with _database(settings) as database_url:
        migrated = asyncio.run(upgrade(database_url, key_ring=settings.key_ring()))
        _announce(f"{_describe_database(settings)}: {migrated.describe()}")


@app.command(epilog=_DATABASE_HELP)
def bootstrap(
    organization: Annotated[str, typer.Option(help="Organization name.")] = "default",
    workspace: Annotated[str, typer.Option(help="Workspace name.")] = "default",
) -> None:
    """Create the organization and workspace if missing and print a new access key (JSON)."""
    from voicehooks.db.migrate import upgrade
    from voicehooks.tenancy.service import bootstrap_database

    # Touches no signing key: with a database URL it runs without the encryption keys.
    settings = _settings(encryption_keys_required=False)

    async def run(database_url: str) -> dict[str, str]:
        if settings.database_url is None:
            # The embedded database may be brand new (its key comes from the data directory).
            await upgrade(database_url, key_ring=settings.key_ring())
        result = await bootstrap_database(database_url, organization, workspace)
        return {
            "organizationId": str(result.organization_id),
            "workspaceId": str(result.workspace_id),
            "accessKey": result.access_key,
        }

    with _database(settings) as database_url:
        print(json.dumps(asyncio.run(run(database_url))))


@app.command("rotate-encryption-key")
def rotate_encryption_key(
    batch_size: Annotated[
        int, typer.Option(min=1, max=10_000, help="Subscriptions re-encrypted per transaction.")
    ] = 500,
) -> None:
    """Re-encrypt every stored signing key under the first of VOICEHOOKS_ENCRYPTION_KEYS.

    Safe while the service runs. Run it once every process has the new key first; then the
    old key can be removed.
    """
    from voicehooks.subscriptions.reencryption import reencrypt_database

    settings = _settings()
    key_ring = settings.key_ring()
    with _database(settings) as database_url:
        report = asyncio.run(reencrypt_database(database_url, key_ring, batch_size=batch_size))
    print(report.summary(key_ring))
    for problem in report.problems():
        typer.echo(f"voicehooks: {problem}", err=True)
    if report.problems():
        raise typer.Exit(1)


# The receiving side's tools (SPEC §5), in modules of their own.
app.command()(listen)
app.command()(trigger)


@app.command("portal-link")
def portal_link(
    organization: Annotated[str, typer.Option(help="Organization name.")] = "default",
    workspace: Annotated[str, typer.Option(help="Workspace name.")] = "default",
    subscription: Annotated[
        str | None, typer.Option(help="Only this subscription (its id) is seen.")
    ] = None,
    expires_in: Annotated[
        int, typer.Option(min=60, max=86400, help="Seconds until the link and its session end.")
    ] = 3600,
    read_only: Annotated[bool, typer.Option(help="The session can look but not change.")] = False,
) -> None:
    """Print a one-time link into the customer portal (VOICEHOOKS_PUBLIC_URL is its base)."""
    from voicehooks.portal.cli import print_portal_link

    settings = _settings()
    with _database(settings) as database_url:
        print_portal_link(
            settings, database_url, organization, workspace, subscription, expires_in, read_only
        )
