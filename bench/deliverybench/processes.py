"""Supervision of what runs under test: the PostgreSQL (a given server or an embedded one),
a fresh database per service, and the service's processes (`voicehooks api|worker`, or the
pgqueuer peer's), started, waited for and always stopped again."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

from deliverybench.common import BENCH_DIR, PROJECT_DIR, free_port, log
from deliverybench.profiling import Profiler
from deliverybench.traffic import EVENT


def database_dsn(admin_dsn: str, database: str) -> str:
    parts = urlsplit(admin_dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, ""))


@contextlib.asynccontextmanager
async def postgres(args: argparse.Namespace) -> AsyncIterator[str]:
    """The admin DSN of the run: `--admin-dsn`, or with `--embedded` a new embedded
    PostgreSQL (autovacuum on, as in production) in a temporary directory."""
    if not args.embedded:
        yield args.admin_dsn
        return
    from voicehooks.db.embedded import embedded_postgres

    data_dir = Path(tempfile.mkdtemp(prefix="voicehooks-bench-pg-"))
    try:
        with embedded_postgres(data_dir) as url:
            yield url
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


async def execute(dsn: str, sql: str, timeout: float = 300) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(sql, timeout=timeout)
    finally:
        await conn.close()


async def server_settings(admin_dsn: str) -> dict[str, str]:
    """Postgres settings that move the figures (autovacuum off leaves tables unanalyzed)."""
    names = [
        "server_version",
        "autovacuum",
        "synchronous_commit",
        "fsync",
        "shared_buffers",
        "jit",
        "max_connections",
    ]
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT name, current_setting(name) AS value FROM pg_settings WHERE name = ANY($1)",
            names,
        )
    finally:
        await conn.close()
    return {row["name"]: row["value"] for row in rows}


class Processes:
    """Subprocesses whose output goes to log files; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, prefix: str) -> None:
        self.log_dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        out = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 (kept by the child)
        try:
            self.running[name] = subprocess.Popen(
                command,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=PROJECT_DIR,
            )
        finally:
            out.close()

    def log_text(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def check_alive(self) -> None:
        for name, process in self.running.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited early:\n{self.log_text(name)[-2000:]}")

    def pids(self) -> dict[str, int]:
        return {name: process.pid for name, process in self.running.items()}

    async def wait_until(
        self, ready: Callable[[], Awaitable[bool]], what: str, bound: float = 30
    ) -> None:
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline:
            self.check_alive()
            if await ready():
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{what} not ready within {bound:g} s")

    async def stop(self, keep_logs: bool) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running.values():
            try:
                await asyncio.to_thread(process.wait, 15)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait, 5)
        if not keep_logs:
            shutil.rmtree(self.log_dir, ignore_errors=True)


class Database:
    """A fresh database `<prefix>_<random>` on the server of `admin_dsn`, with `settings`
    (`NAME=VALUE`) applied to it; dropped at the end unless `keep`."""

    def __init__(
        self, admin_dsn: str, prefix: str, *, keep: bool, settings: Sequence[str] = ()
    ) -> None:
        self.admin_dsn = admin_dsn
        self.name = f"{prefix}_{secrets.token_hex(4)}"
        self.dsn = database_dsn(admin_dsn, self.name)
        self.keep = keep
        self.settings = settings
        self.created = False

    async def create(self) -> None:
        admin = await asyncpg.connect(self.admin_dsn, timeout=10)
        try:
            await admin.execute(f'CREATE DATABASE "{self.name}"')
            self.created = True
            for setting in self.settings:
                name, _, value = setting.partition("=")
                if not name.replace("_", "").replace(".", "").isalnum():
                    raise ValueError(f"not a setting name: {name!r}")
                await admin.execute(
                    f'ALTER DATABASE "{self.name}" SET {name} = '
                    + "'"
                    + value.replace("'", "''")
                    + "'"
                )
        finally:
            await admin.close()

    async def query(self, sql: str, *params: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn, timeout=10)
        try:
            return await conn.fetch(sql, *params)
        finally:
            await conn.close()

    async def execute(self, sql: str, *params: Any) -> str:
        conn = await asyncpg.connect(self.dsn, timeout=10)
        try:
            return await conn.execute(sql, *params, timeout=600)
        finally:
            await conn.close()

    async def analyze(self) -> float:
        """ANALYZE of the whole database (what autovacuum does); its duration in s."""
        started = time.monotonic()
        await execute(self.dsn, "ANALYZE")
        return round(time.monotonic() - started, 2)

    async def vacuum(self, table: str) -> float:
        """VACUUM of one table; its duration in s."""
        started = time.monotonic()
        await execute(self.dsn, f'VACUUM "{table}"')
        return round(time.monotonic() - started, 2)

    async def drop(self) -> None:
        if self.created and not self.keep:
            await execute(self.admin_dsn, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def run_once(command: list[str], env: dict[str, str], what: str) -> str:
    """A set-up command that must succeed before the service's processes start; its stdout."""
    done = subprocess.run(
        command, env=env, capture_output=True, timeout=120, check=False, cwd=PROJECT_DIR
    )
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stderr.decode()}")
    return done.stdout.decode()


def voicehooks_command(python: str, *words: str) -> list[str]:
    return [python, "-m", "voicehooks", *words]


def new_encryption_key() -> str:
    """A VOICEHOOKS_ENCRYPTION_KEYS entry: signing keys are encrypted at rest, and each bench
    database gets a key of its own."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def voicehooks_env(dsn: str, token: str, encryption_key: str, log_level: str) -> dict[str, str]:
    """The environment of every voicehooks process of a bench: this process's, plus the
    database, the tokens and plain HTTP to receivers on 127.0.0.1."""
    env = dict(os.environ)
    env.update(
        VOICEHOOKS_DATABASE_URL=dsn,
        VOICEHOOKS_INGEST_TOKEN=token,
        VOICEHOOKS_ENCRYPTION_KEYS=encryption_key,
        VOICEHOOKS_ALLOW_HTTP_TARGETS="true",
        VOICEHOOKS_ALLOWED_TARGET_NETWORKS="127.0.0.0/8",
        VOICEHOOKS_LOG_LEVEL=log_level,
    )
    return env


def migrate_and_bootstrap(python: str, env: dict[str, str]) -> dict[str, str]:
    """`voicehooks migrate` and `voicehooks bootstrap` on the service's fresh database; the
    tenancy bootstrap prints (organization, workspace, access key)."""
    run_once(voicehooks_command(python, "migrate"), env, "voicehooks migrate")
    printed = run_once(
        voicehooks_command(python, "bootstrap", "--organization", "bench"),
        env,
        "voicehooks bootstrap",
    )
    tenancy: dict[str, str] = json.loads(printed.strip().splitlines()[-1])
    return tenancy


class FreshService:
    """A service under test: a fresh database, the service's processes on it (logs in a
    temporary directory) and its HTTP API on a free port of 127.0.0.1; `stop` ends the
    processes and drops the database."""

    def __init__(
        self,
        args: argparse.Namespace,
        database_prefix: str,
        log_prefix: str,
        *,
        db_settings: Sequence[str] = (),
        keep_logs: bool = False,
    ) -> None:
        self.args = args
        self.db = Database(args.admin_dsn, database_prefix, keep=args.keep_db, settings=db_settings)
        self.database = self.db.name
        self.dsn = self.db.dsn
        self.token = secrets.token_urlsafe(24)
        self.api_port = free_port()
        self.processes = Processes(log_prefix)
        self.log_dir = self.processes.log_dir
        self.keep_logs = keep_logs
        self.tenancy: dict[str, str] = {}

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def workspace(self) -> str:
        return self.tenancy["workspaceId"]

    async def api_ready(self, session: aiohttp.ClientSession) -> bool:
        try:
            async with session.get(f"{self.base}/readyz") as response:
                return response.status == 200
        except (aiohttp.ClientError, OSError):
            return False

    async def ready(self, session: aiohttp.ClientSession) -> bool:
        """Whether every process can take work (the api's readiness, unless a service knows
        more)."""
        return await self.api_ready(session)

    async def wait_ready(self, what: str) -> None:
        async with aiohttp.ClientSession() as session:
            await self.processes.wait_until(lambda: self.ready(session), what)

    def pids(self) -> dict[str, int]:
        return self.processes.pids()

    async def stop(self) -> None:
        await self.processes.stop(self.keep_logs)
        await self.db.drop()


class Service(FreshService):
    """A fresh database, `voicehooks api` and `voicehooks worker` as subprocesses."""

    label = "voicehooks"

    def __init__(self, args: argparse.Namespace, profiler: Profiler | None = None) -> None:
        super().__init__(
            args,
            "voicehooks_bench",
            "voicehooks-bench-",
            db_settings=args.db_setting,
            keep_logs=args.keep_logs,
        )
        self.encryption_key = new_encryption_key()
        self.profiler = profiler

    def env(self) -> dict[str, str]:
        env = voicehooks_env(self.dsn, self.token, self.encryption_key, self.args.log_level)
        env.update(
            VOICEHOOKS_MAX_IN_FLIGHT=str(self.args.max_in_flight),
            # One dispatcher process per core, sharing the raw client's concurrency between them.
            VOICEHOOKS_WORKER_PROCESSES=str(self.args.worker_processes),
            VOICEHOOKS_MAX_IN_FLIGHT_PER_HOST=str(
                max(1, self.args.concurrency // self.args.worker_processes)
            ),
        )
        if self.profiler is not None:
            env["BENCH_QUERY_STATS"] = str(self.profiler.query_stats)
        return env

    def _worker_command(self) -> list[str]:
        if self.profiler is not None:
            return [self.args.python, str(BENCH_DIR / "profile_worker.py"), "worker"]
        return voicehooks_command(self.args.python, "worker")

    async def start(self) -> None:
        log(f"service: database {self.database}, api on port {self.api_port}")
        await self.db.create()
        env = self.env()
        self.tenancy = migrate_and_bootstrap(self.args.python, env)
        self.processes.spawn(
            "api",
            voicehooks_command(
                self.args.python, "api", "--host", "127.0.0.1", "--port", str(self.api_port)
            ),
            env,
        )
        self.processes.spawn("worker", self._worker_command(), env)
        await self.wait_ready("api or worker")

    async def ready(self, session: aiohttp.ClientSession) -> bool:
        if not await self.api_ready(session):
            return False
        if "dispatcher_started" in self.processes.log_text("worker"):
            return True
        # At WARNING the start is not logged: its LISTEN shows it.
        rows = await self.db.query(
            "SELECT 1 FROM pg_stat_activity"
            " WHERE datname = current_database() AND query ILIKE 'LISTEN %'"
        )
        return bool(rows)

    async def subscribe(
        self, session: aiohttp.ClientSession, url: str, channel: str | None = None
    ) -> str:
        org, ws = self.tenancy["organizationId"], self.tenancy["workspaceId"]
        body: dict[str, Any] = {"service": "channels", "event": EVENT, "url": url}
        if channel is not None:
            body["eventFilters"] = [{"key": "channelId", "value": channel}]
        async with session.post(
            f"{self.base}/organizations/{org}/workspaces/{ws}/webhook-subscriptions",
            json=body,
            headers={"Authorization": f"AccessKey {self.tenancy['accessKey']}"},
        ) as response:
            answer = await response.json()
            if response.status != 201:
                raise RuntimeError(f"subscription refused: {response.status} {answer}")
            return answer["id"]

    async def backlog(self, session: aiohttp.ClientSession) -> int | None:
        """Deliveries due or in flight, from the service's own `/metrics` (whatever its queue
        tables are); None when the metrics do not say."""
        async with session.get(f"{self.base}/metrics") as response:
            text = await response.text()
        values: dict[str, float] = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in ("voicehooks_backlog_due", "voicehooks_deliveries_in_flight"):
                values[name] = float(value)
        return int(sum(values.values())) if len(values) == 2 else None


async def wait_idle(service: Any, bound: float = 60) -> float | None:
    """Seconds until the service reports nothing due or in flight (None: not within bound)."""
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while time.monotonic() - started < bound:
            if await service.backlog(session) == 0:
                return round(time.monotonic() - started, 2)
            await asyncio.sleep(0.2)
    return None


def peer_command(args: argparse.Namespace, role: str) -> list[str]:
    return [args.python or sys.executable, str(BENCH_DIR / "deliverybench" / "peer.py"), role]


class PeerService(FreshService):
    """The pgqueuer peer (bench/deliverybench/peer.py): a fresh database with pgqueuer's
    schema, its ingestion api and `--worker-processes` workers sharing `--concurrency`."""

    label = "pgqueuer"

    def __init__(self, args: argparse.Namespace, target: str) -> None:
        super().__init__(
            args,
            "voicehooks_bench_peer",
            "voicehooks-bench-peer-",
            db_settings=args.db_setting,
            keep_logs=args.keep_logs,
        )
        self.target = target
        self.tenancy = {"workspaceId": str(uuid.uuid4())}

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PEER_DSN=self.dsn,
            PEER_TOKEN=self.token,
            PEER_PORT=str(self.api_port),
            PEER_TARGET=self.target,
            PEER_SIGNING_KEY=secrets.token_urlsafe(32),
            PEER_CONCURRENCY=str(max(1, self.args.concurrency // self.args.worker_processes)),
        )
        return env

    async def start(self) -> None:
        log(f"peer: database {self.database}, api on port {self.api_port}")
        await self.db.create()
        env = self.env()
        run_once(peer_command(self.args, "install"), env, "pgqueuer install")
        self.processes.spawn("api", peer_command(self.args, "api"), env)
        for index in range(self.args.worker_processes):
            self.processes.spawn(f"worker-{index}", peer_command(self.args, "worker"), env)
        await self.wait_ready("peer api or workers")

    async def ready(self, session: aiohttp.ClientSession) -> bool:
        if not await self.api_ready(session):
            return False
        return all(
            "peer_worker_started" in self.processes.log_text(name)
            for name in self.processes.running
            if name.startswith("worker-")
        )

    def pids(self) -> dict[str, int]:
        pids = self.processes.pids()
        workers = [pid for name, pid in pids.items() if name.startswith("worker-")]
        # The meter counts a process's children with it; the workers are the api's siblings.
        api = {"api": pids["api"]} if "api" in pids else {}
        return api | {f"worker{i}": pid for i, pid in enumerate(workers)}

    async def backlog(self, session: aiohttp.ClientSession) -> int | None:
        rows = await self.db.query("SELECT count(*) AS n FROM pgqueuer")
        return int(rows[0]["n"])
