#!/usr/bin/env python3
"""Delivery benchmark of voicehooks: raw HTTP limit, end-to-end throughput, latency.

One run, one machine, loopback only:

1. raw      a plain aiohttp client POSTs a representative delivery body to the receiver at
            the worker's in-flight limit: the requests/s ceiling of this machine.
2. e2e      a fresh database, `voicehooks api` and `voicehooks worker` as subprocesses, one
            subscription to the receiver; N events ingested in batches of 1000 as fast as
            possible; deliveries/s measured as arrivals at the receiver.
3. ratio    e2e deliveries/s (first to last arrival) divided by raw requests/s.
4. latency  single events at a steady rate, each payload carrying `sentAt`; the receiver
            computes arrival − sentAt; p50/p95/p99.

The receiver is a minimal aiohttp server in its own process. See bench/README.md.

    python bench/delivery.py [--events N] [--concurrency C] [--rate R] [--duration S]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
from aiohttp import web

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
PROJECT_DIR = BENCH_DIR.parent

# Floors of this project on a 2-core machine (bench/README.md).
FLOOR_RATIO = 0.35
FLOOR_P99_MS = 50.0
SLOWEST_KEPT = 10  # latency events listed with their send time

# The dispatcher's defaults (src/voicehooks/config.py); the receiver is one host, so the
# per-host bound is the concurrency the worker can reach against it.
DEFAULT_MAX_IN_FLIGHT = 256
DEFAULT_MAX_IN_FLIGHT_PER_HOST = 64

BATCH_SIZE = 1000
EVENT = "voice.inbound"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the receiver (its own process) ------------------------------------------------------------


class _Recorder:
    def __init__(self) -> None:
        self.reset("idle")

    def reset(self, phase: str) -> None:
        self.phase = phase
        self.requests = 0
        self.ids: set[str] = set()
        self.first: float | None = None
        self.last: float | None = None
        self.latency: dict[str, tuple[float, float]] = {}  # call id -> (sentAt, arrival)


async def _receiver_serve(conn: Any) -> None:
    recorder = _Recorder()

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        recorder.requests += 1
        delivery_id = request.headers.get("webhook-id")
        if delivery_id is not None:
            recorder.ids.add(delivery_id)
        if recorder.first is None:
            recorder.first = now
        recorder.last = now
        if recorder.phase == "latency":
            payload = json.loads(body).get("payload", {})
            sent_at = payload.get("sentAt")
            if isinstance(sent_at, int | float) and payload.get("id") not in recorder.latency:
                recorder.latency[payload["id"]] = (float(sent_at), now)
        return web.Response(text="ok")

    async def stats(request: web.Request) -> web.Response:
        data: dict[str, Any] = {
            "phase": recorder.phase,
            "requests": recorder.requests,
            "distinct": len(recorder.ids),
            "first": recorder.first,
            "last": recorder.last,
        }
        if request.query.get("detail"):
            data["latency"] = recorder.latency
        return web.json_response(data)

    async def reset(request: web.Request) -> web.Response:
        recorder.reset(request.query.get("phase", "idle"))
        return web.json_response({"phase": recorder.phase})

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get("/_stats", stats)
    app.router.add_post("/_reset", reset)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock, backlog=1024)
    await site.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    conn.send(sock.getsockname()[1])
    await stop.wait()
    await runner.cleanup()


def _receiver_main(conn: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    asyncio.run(_receiver_serve(conn))


class Receiver:
    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._parent, child = context.Pipe()
        self.process = context.Process(target=_receiver_main, args=(child,), daemon=True)
        self.port = 0

    def start(self) -> None:
        self.process.start()
        if not self._parent.poll(20):
            raise RuntimeError("receiver did not start within 20 s")
        self.port = self._parent.recv()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


# -- CPU accounting (Linux /proc; empty elsewhere) ----------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def _machine_cpu() -> tuple[float, float, float] | None:
    """(busy, total, irq + softirq) CPU seconds of the whole machine since boot."""
    try:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
    except OSError:
        return None
    total = sum(values[:8])
    idle = values[3] + values[4]
    return (total - idle) / _TICK, total / _TICK, (values[5] + values[6]) / _TICK


def _all_processes() -> dict[int, tuple[str, float, int]]:
    """pid -> (command name, utime + stime, parent pid) of every process visible in /proc."""
    found: dict[int, tuple[str, float, int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as stat:
                    text = stat.read()
            except OSError:
                continue
            head, _, rest = text.rpartition(")")
            fields = rest.split()
            found[int(entry.name)] = (
                head.partition("(")[2],
                (int(fields[11]) + int(fields[12])) / _TICK,
                int(fields[1]),
            )
    return found


@dataclass
class CpuSnapshot:
    wall: float
    procs: dict[str, float]
    postgres: dict[int, float]
    machine: tuple[float, float, float] | None
    own: float
    everyone: dict[int, tuple[str, float, int]]


@dataclass
class CpuMeter:
    """CPU seconds of each part of the system during a phase (api, worker, postgres, …).

    Everything else on the machine is reported too ("other processes", by command name):
    other people's work on a shared machine disturbs the figures, and this shows how much.
    """

    admin_dsn: str
    database: str
    procs: dict[str, int] = field(default_factory=dict)

    async def snapshot(self) -> CpuSnapshot:
        postgres: dict[int, float] = {}
        with contextlib.suppress(Exception):
            conn = await asyncpg.connect(self.admin_dsn, timeout=5)
            try:
                rows = await conn.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE datname = $1", self.database
                )
            finally:
                await conn.close()
            for row in rows:
                cpu = _proc_cpu(row["pid"])
                if cpu is not None:
                    postgres[row["pid"]] = cpu
        everyone = _all_processes()
        procs = {}
        for name, pid in self.procs.items():
            cpu = _proc_cpu(pid)
            if cpu is not None:
                # A process's children count as its own (e.g. `worker --processes N`).
                procs[name] = cpu + sum(c for _, c, parent in everyone.values() if parent == pid)
        return CpuSnapshot(
            time.monotonic(),
            procs,
            postgres,
            _machine_cpu(),
            time.process_time(),
            everyone,
        )

    def diff(self, before: CpuSnapshot, after: CpuSnapshot) -> dict[str, Any]:
        wall = after.wall - before.wall
        cores = os.cpu_count() or 1
        parts: dict[str, float] = {}
        for name, cpu in after.procs.items():
            if name in before.procs:
                parts[name] = cpu - before.procs[name]
        parts["postgres"] = sum(
            cpu - before.postgres.get(pid, 0.0) for pid, cpu in after.postgres.items()
        )
        parts["bench"] = after.own - before.own
        tracked = set(self.procs.values())
        children = {pid for pid, (_, _, parent) in after.everyone.items() if parent in tracked}
        ours = {os.getpid(), *tracked, *children, *before.postgres, *after.postgres}
        others: dict[str, float] = {}
        for pid, (name, cpu, _) in after.everyone.items():
            if pid in ours:
                continue
            used = cpu - before.everyone.get(pid, (name, 0.0, 0))[1]
            if used > 0:
                others[name] = others.get(name, 0.0) + used
        top_others = sorted(others.items(), key=lambda item: -item[1])[:4]
        result: dict[str, Any] = {
            "wall_s": round(wall, 2),
            "cpu_s": {name: round(value, 2) for name, value in parts.items()},
            "other_processes_cpu_s": round(sum(others.values()), 2),
            "other_processes_top": {name: round(value, 2) for name, value in top_others},
            "cores": cores,
        }
        if before.machine and after.machine:
            busy = after.machine[0] - before.machine[0]
            total = after.machine[1] - before.machine[1]
            result["machine_busy_pct"] = round(100 * busy / total, 1) if total else None
            result["irq_softirq_cpu_s"] = round(after.machine[2] - before.machine[2], 2)
        # Disturbed: other processes took more than a tenth of the machine.
        result["disturbed"] = result["other_processes_cpu_s"] > 0.1 * wall * cores
        return result


# -- helpers ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil
    return sorted_values[int(rank) - 1]


def delivery_body(payload: dict[str, Any]) -> bytes:
    """The body the service sends (SPEC §4), rendered as the service renders it."""
    return json.dumps(
        {"service": "channels", "event": EVENT, "payload": payload},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()


def representative_headers(delivery_id: str) -> dict[str, str]:
    """Headers of the same shape and size as a signed delivery's."""
    timestamp = str(int(time.time()))
    signature = secrets.token_urlsafe(32)
    return {
        "content-type": "application/json",
        "user-agent": "voicehooks/bench",
        "messagebird-signature": signature,
        "messagebird-request-timestamp": timestamp,
        "messagebird-request-id": delivery_id,
        "webhook-id": delivery_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + signature,
    }


def database_dsn(admin_dsn: str, database: str) -> str:
    parts = urlsplit(admin_dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, ""))


async def receiver_stats(session: aiohttp.ClientSession, base: str, detail: bool = False) -> Any:
    params = {"detail": "1"} if detail else {}
    async with session.get(f"{base}/_stats", params=params) as response:
        return await response.json()


async def receiver_reset(session: aiohttp.ClientSession, base: str, phase: str) -> None:
    async with session.post(f"{base}/_reset", params={"phase": phase}) as response:
        response.raise_for_status()


# -- optional profiling (--profile) -----------------------------------------------------------


def _frame_name(frame: str) -> str:
    """`function (path/to/file.py:123)` -> `function (file.py)`."""
    name, _, where = frame.partition(" (")
    return f"{name} ({Path(where.split(':')[0]).name})" if where else name


def summarize_collapsed(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares of the functions in a py-spy raw (collapsed) file."""
    self_counts: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            total += count
            frames = [_frame_name(f) for f in stack.split(";")]
            self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + count
            for frame in set(frames):
                inclusive[frame] = inclusive.get(frame, 0) + count

    def share(counts: dict[str, int]) -> list[tuple[str, float]]:
        ranked = sorted(counts.items(), key=lambda item: -item[1])[:top]
        return [(name, round(100 * n / total, 1)) for name, n in ranked]

    return {"samples": total, "self_pct": share(self_counts), "inclusive_pct": share(inclusive)}


class Profiler:
    """py-spy on api and worker per phase, and the worker's statements timed (profile_worker)."""

    def __init__(self, directory: Path, python: str) -> None:
        self.directory = directory
        found = shutil.which("py-spy") or str(Path(python).parent / "py-spy")
        self.py_spy = found if Path(found).exists() else None
        self.procs: dict[str, int] = {}
        self.query_stats = directory / "worker-queries.json"

    @contextlib.asynccontextmanager
    async def phase(self, name: str) -> Any:
        worker = self.procs.get("worker")
        if worker:
            os.kill(worker, signal.SIGUSR1)  # drop what came before this phase
        spies = []
        if self.py_spy:
            for proc, pid in self.procs.items():
                output = self.directory / f"{name}-{proc}.txt"
                spies.append(
                    subprocess.Popen(
                        [
                            self.py_spy,
                            "record",
                            "--pid",
                            str(pid),
                            "--rate",
                            "100",
                            "--nonblocking",
                            "--format",
                            "raw",
                            "--output",
                            str(output),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
        report: dict[str, Any] = {}
        try:
            yield report
        finally:
            for spy in spies:
                spy.send_signal(signal.SIGINT)
            for spy in spies:
                try:
                    await asyncio.to_thread(spy.wait, 15)
                except subprocess.TimeoutExpired:
                    spy.kill()
            for proc in self.procs:
                output = self.directory / f"{name}-{proc}.txt"
                if output.exists():
                    report[f"{proc}_py_spy"] = summarize_collapsed(output)
            snapshot = Path(f"{self.query_stats}.snapshot")
            if worker:
                os.kill(worker, signal.SIGUSR1)
                for _ in range(50):
                    await asyncio.sleep(0.1)
                    if snapshot.exists():
                        break
                await asyncio.sleep(0.1)
            if snapshot.exists():
                target = self.directory / f"{name}-worker-queries.json"
                snapshot.rename(target)
                report["worker_statements"] = json.loads(target.read_text())


@contextlib.asynccontextmanager
async def no_profile(name: str) -> Any:
    yield {}


# -- phase 1: the raw limit ---------------------------------------------------------------------


async def raw_phase(args: argparse.Namespace, receiver: Receiver, meter: CpuMeter) -> dict:
    url = f"{receiver.base}/hook"
    body = delivery_body(
        {"id": f"raw-{uuid.uuid4()}", "channelId": str(uuid.uuid4()), "status": "ringing"}
    )
    total = args.raw_requests
    warmup = min(total, args.concurrency * 8)
    ids = [str(uuid.uuid4()) for _ in range(warmup + total)]
    errors = 0

    connector = aiohttp.TCPConnector(limit=args.concurrency, limit_per_host=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def run(indexes: range) -> None:
            nonlocal errors
            todo = iter(indexes)

            async def one_client() -> None:
                nonlocal errors
                for i in todo:  # shared: each index is sent once
                    async with session.post(
                        url, data=body, headers=representative_headers(ids[i])
                    ) as response:
                        await response.read()
                        if response.status != 200:
                            errors += 1

            await asyncio.wait_for(
                asyncio.gather(*(one_client() for _ in range(args.concurrency))),
                timeout=args.raw_timeout,
            )

        await receiver_reset(session, receiver.base, "raw-warmup")
        await run(range(warmup))
        await receiver_reset(session, receiver.base, "raw")
        before = await meter.snapshot()
        started = time.perf_counter()
        await run(range(warmup, warmup + total))
        elapsed = time.perf_counter() - started
        after = await meter.snapshot()
        stats = await receiver_stats(session, receiver.base)

    return {
        "requests": total,
        "concurrency": args.concurrency,
        "body_bytes": len(body),
        "elapsed_s": round(elapsed, 3),
        "requests_per_s": round(total / elapsed, 1),
        "received_distinct": stats["distinct"],
        "errors": errors,
        "cpu": meter.diff(before, after),
    }


# -- the service under test ---------------------------------------------------------------------


class Service:
    """A fresh database, `voicehooks api` and `voicehooks worker` as subprocesses."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.database = f"voicehooks_bench_{secrets.token_hex(4)}"
        self.dsn = database_dsn(args.admin_dsn, self.database)
        self.token = secrets.token_urlsafe(24)
        # Signing keys are encrypted at rest; this run's database gets a key of its own.
        self.encryption_key = base64.b64encode(secrets.token_bytes(32)).decode()
        self.api_port = free_port()
        self.log_dir = Path(tempfile.mkdtemp(prefix="voicehooks-bench-"))
        self.api: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.tenancy: dict[str, str] = {}
        self.created = False
        self.profiler: Profiler | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            VOICEHOOKS_DATABASE_URL=self.dsn,
            VOICEHOOKS_INGEST_TOKEN=self.token,
            VOICEHOOKS_ENCRYPTION_KEYS=self.encryption_key,
            VOICEHOOKS_ALLOW_HTTP_TARGETS="true",
            VOICEHOOKS_ALLOWED_TARGET_NETWORKS="127.0.0.0/8",
            VOICEHOOKS_LOG_LEVEL=self.args.log_level,
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

    def _command(self, *words: str) -> list[str]:
        if words[0] == "worker" and self.profiler is not None:
            return [self.args.python, str(BENCH_DIR / "profile_worker.py"), *words]
        return [self.args.python, "-m", "voicehooks", *words]

    async def start(self) -> None:
        admin = await asyncpg.connect(self.args.admin_dsn, timeout=10)
        try:
            await admin.execute(f'CREATE DATABASE "{self.database}"')
            self.created = True
            for setting in self.args.db_setting:
                name, _, value = setting.partition("=")
                if not name.replace("_", "").replace(".", "").isalnum():
                    raise ValueError(f"not a setting name: {name!r}")
                await admin.execute(
                    f'ALTER DATABASE "{self.database}" SET {name} = '
                    + "'"
                    + value.replace("'", "''")
                    + "'"
                )
        finally:
            await admin.close()
        env = self.env()
        for words in (("migrate",), ("bootstrap", "--organization", "bench")):
            done = subprocess.run(
                self._command(*words),
                env=env,
                capture_output=True,
                timeout=120,
                check=False,
                cwd=PROJECT_DIR,
            )
            if done.returncode != 0:
                raise RuntimeError(f"voicehooks {words[0]} failed:\n{done.stderr.decode()}")
            if words[0] == "bootstrap":
                self.tenancy = json.loads(done.stdout.decode().strip().splitlines()[-1])
        self.api = self._spawn("api", "--host", "127.0.0.1", "--port", str(self.api_port))
        self.worker = self._spawn("worker")
        await self._wait_ready()

    def _spawn(self, *words: str) -> subprocess.Popen[bytes]:
        out = open(self.log_dir / f"{words[0]}.log", "wb")  # noqa: SIM115 (kept by the child)
        try:
            return subprocess.Popen(
                self._command(*words),
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=PROJECT_DIR,
            )
        finally:
            out.close()

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        worker_log = self.log_dir / "worker.log"
        api_ready = worker_ready = False
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                for name, process in (("api", self.api), ("worker", self.worker)):
                    if process is not None and process.poll() is not None:
                        tail = (self.log_dir / f"{name}.log").read_text()[-2000:]
                        raise RuntimeError(f"voicehooks {name} exited early:\n{tail}")
                if not api_ready:
                    with contextlib.suppress(aiohttp.ClientError, OSError):
                        async with session.get(f"{self.base}/readyz") as response:
                            api_ready = response.status == 200
                if not worker_ready and worker_log.exists():
                    worker_ready = "dispatcher_started" in worker_log.read_text()
                if not worker_ready:  # at WARNING the start is not logged: its LISTEN shows it
                    rows = await self.query(
                        "SELECT 1 FROM pg_stat_activity"
                        " WHERE datname = current_database() AND query ILIKE 'LISTEN %'"
                    )
                    worker_ready = bool(rows)
                if api_ready and worker_ready:
                    return
                await asyncio.sleep(0.1)
        raise RuntimeError("api or worker not ready within 30 s")

    async def subscribe(self, session: aiohttp.ClientSession, url: str) -> str:
        org, ws = self.tenancy["organizationId"], self.tenancy["workspaceId"]
        async with session.post(
            f"{self.base}/organizations/{org}/workspaces/{ws}/webhook-subscriptions",
            json={"service": "channels", "event": EVENT, "url": url},
            headers={"Authorization": f"AccessKey {self.tenancy['accessKey']}"},
        ) as response:
            body = await response.json()
            if response.status != 201:
                raise RuntimeError(f"subscription refused: {response.status} {body}")
            return body["id"]

    async def query(self, sql: str, *params: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn, timeout=10)
        try:
            return await conn.fetch(sql, *params)
        finally:
            await conn.close()

    async def stop(self) -> None:
        for process in (self.api, self.worker):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in (self.api, self.worker):
            if process is None:
                continue
            try:
                await asyncio.to_thread(process.wait, 15)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait, 5)
        if self.created and not self.args.keep_db:
            admin = await asyncpg.connect(self.args.admin_dsn, timeout=10)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            finally:
                await admin.close()
        if not self.args.keep_logs:
            shutil.rmtree(self.log_dir, ignore_errors=True)


# -- phase 2: end-to-end throughput -------------------------------------------------------------


async def e2e_phase(
    args: argparse.Namespace, service: Service, receiver: Receiver, meter: CpuMeter
) -> dict:
    run = secrets.token_hex(4)
    workspace = service.tenancy["workspaceId"]
    channels = [str(uuid.uuid4()) for _ in range(8)]
    total = args.events
    batches: list[bytes] = []
    for start in range(0, total, BATCH_SIZE):
        items = [
            {
                "workspaceId": workspace,
                "event": EVENT,
                "payload": {
                    "id": f"e2e-{run}-{i}",
                    "channelId": channels[i % len(channels)],
                    "status": "ringing",
                },
            }
            for i in range(start, min(total, start + BATCH_SIZE))
        ]
        batches.append(json.dumps({"events": items}).encode())
    headers = {"Authorization": f"Bearer {service.token}", "content-type": "application/json"}
    batch_seconds: list[float] = []
    accepted = 0
    problems: list[str] = []

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await receiver_reset(session, receiver.base, "e2e")
        todo = iter(batches)

        async def ingest_client() -> None:
            nonlocal accepted
            for body in todo:
                started = time.perf_counter()
                async with session.post(
                    f"{service.base}/internal/v1/events/batch", data=body, headers=headers
                ) as response:
                    answer = await response.read()
                    if response.status != 202:
                        problems.append(f"batch answered {response.status}: {answer[:300]!r}")
                        continue
                batch_seconds.append(time.perf_counter() - started)
                accepted += sum(r["deliveries"] for r in json.loads(answer)["results"])

        before = await meter.snapshot()
        ingest_start = time.time()
        await asyncio.wait_for(
            asyncio.gather(*(ingest_client() for _ in range(args.ingest_concurrency))),
            timeout=args.timeout,
        )
        ingest_end = time.time()
        log(
            f"e2e: ingested {total} events in {ingest_end - ingest_start:.2f} s "
            f"({accepted} deliveries created)"
        )

        deadline = time.monotonic() + args.timeout
        next_report = time.monotonic() + 5
        stats = await receiver_stats(session, receiver.base)
        while stats["distinct"] < accepted and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            stats = await receiver_stats(session, receiver.base)
            if time.monotonic() >= next_report:
                next_report += 5
                log(f"e2e: {stats['distinct']}/{accepted} delivered")
        after = await meter.snapshot()
        complete = stats["distinct"] >= total

    # Until every outcome is recorded (the worker records in batches after sending).
    recorded_at = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = await service.query(
            "SELECT count(*) AS n FROM deliveries WHERE state = 'pending'",
        )
        if rows[0]["n"] == 0:
            recorded_at = time.time()
            break
        await asyncio.sleep(0.2)
    states = {
        row["state"]: row["n"]
        for row in await service.query("SELECT state, count(*) AS n FROM deliveries GROUP BY state")
    }
    attempts = (await service.query("SELECT count(*) AS n FROM attempts"))[0]["n"]

    first, last = stats["first"], stats["last"]
    arrivals_span = (last - first) if first and last else None
    batch_seconds.sort()
    return {
        "events": total,
        "batch_size": BATCH_SIZE,
        "ingest_concurrency": args.ingest_concurrency,
        "deliveries_created": accepted,
        "received_requests": stats["requests"],
        "received_distinct": stats["distinct"],
        "duplicates": stats["requests"] - stats["distinct"],
        "complete": complete,
        "problems": problems,
        "ingest_s": round(ingest_end - ingest_start, 3),
        "ingest_events_per_s": round(total / (ingest_end - ingest_start), 1),
        "ingest_batch_s_p50": round(percentile(batch_seconds, 50) or 0, 3),
        "ingest_batch_s_max": round(batch_seconds[-1], 3) if batch_seconds else None,
        "first_arrival_after_ingest_start_s": round(first - ingest_start, 3) if first else None,
        "arrivals_span_s": round(arrivals_span, 3) if arrivals_span else None,
        "deliveries_per_s": (
            round((stats["distinct"] - 1) / arrivals_span, 1) if arrivals_span else None
        ),
        "ingest_to_last_arrival_s": round(last - ingest_start, 3) if last else None,
        "deliveries_per_s_from_ingest": (
            round(stats["distinct"] / (last - ingest_start), 1) if last else None
        ),
        "all_recorded_after_ingest_start_s": (
            round(recorded_at - ingest_start, 3) if recorded_at else None
        ),
        "delivery_states": states,
        "attempts_recorded": attempts,
        "cpu": meter.diff(before, after),
    }


# -- phase 4: latency at a steady rate ----------------------------------------------------------


def _dirty_kib() -> int:
    """Dirty and under-writeback page cache of the machine, KiB (0 where /proc is missing)."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    except OSError:
        return 0
    return sum(int(fields.get(name, "0 kB").split()[0]) for name in ("Dirty", "Writeback"))


async def settle_writes(dsn: str, bound: float = 60.0) -> float:
    """Write the e2e phase's data out before latency is measured: a checkpoint, then the
    kernel's dirty pages. Otherwise the kernel flushes them about 30 s later, in the middle of
    the latency phase, and every commit that waits for the WAL waits behind that flush."""
    started = time.monotonic()
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute("CHECKPOINT", timeout=bound)
    finally:
        await conn.close()
    await asyncio.to_thread(os.sync)
    while _dirty_kib() > 16 * 1024 and time.monotonic() - started < bound:
        await asyncio.sleep(0.2)
    return round(time.monotonic() - started, 2)


async def latency_phase(
    args: argparse.Namespace, service: Service, receiver: Receiver, meter: CpuMeter
) -> dict:
    run = secrets.token_hex(4)
    workspace = service.tenancy["workspaceId"]
    channel = str(uuid.uuid4())
    warmup_count = int(args.warmup * args.rate)
    total = warmup_count + int(args.duration * args.rate)
    headers = {"Authorization": f"Bearer {service.token}", "content-type": "application/json"}
    acked: dict[str, float] = {}
    send_lag: list[float] = []
    errors: list[str] = []

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await receiver_reset(session, receiver.base, "latency")

        async def send(i: int) -> None:
            call_id = f"lat-{run}-{i}"
            payload = {"id": call_id, "channelId": channel, "status": "ringing"}
            payload["sentAt"] = time.time()
            body = json.dumps({"workspaceId": workspace, "event": EVENT, "payload": payload})
            try:
                async with session.post(
                    f"{service.base}/internal/v1/events", data=body.encode(), headers=headers
                ) as response:
                    await response.read()
                    if response.status != 202:
                        errors.append(f"{response.status}")
                        return
                acked[call_id] = time.time() - payload["sentAt"]
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors.append(type(exc).__name__)

        tasks = []
        start = time.monotonic() + 0.05
        before = None
        for i in range(total):
            if i == warmup_count:
                before = await meter.snapshot()
            target = start + i / args.rate
            delay = target - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            send_lag.append(time.monotonic() - target)
            tasks.append(asyncio.create_task(send(i)))
        await asyncio.wait(tasks, timeout=30)
        for task in tasks:
            task.cancel()

        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            stats = await receiver_stats(session, receiver.base)
            if stats["distinct"] >= len(acked):
                break
            await asyncio.sleep(0.2)
        after = await meter.snapshot()
        stats = await receiver_stats(session, receiver.base, detail=True)

    measured = {f"lat-{run}-{i}" for i in range(warmup_count, total)}
    arrivals = {k: v for k, v in stats["latency"].items() if k in measured}
    e2e_ms = sorted((arrival - sent) * 1000 for sent, arrival in arrivals.values())
    ack_ms = sorted(acked[k] * 1000 for k in measured if k in acked)
    after_ack_ms = sorted(
        (arrival - sent - acked[k]) * 1000 for k, (sent, arrival) in arrivals.items() if k in acked
    )
    send_lag.sort()
    # when a tail is long, the times of its events say what to look for in other records
    slowest = sorted(
        (
            {
                "sent_at_utc": datetime.fromtimestamp(sent, UTC).strftime("%H:%M:%S.%f")[:-3],
                "ingest_to_arrival_ms": round((arrival - sent) * 1000, 1),
                "ack_ms": round(acked[k] * 1000, 1) if k in acked else None,
            }
            for k, (sent, arrival) in arrivals.items()
        ),
        key=lambda event: -event["ingest_to_arrival_ms"],
    )[:SLOWEST_KEPT]

    def summary(values: list[float]) -> dict[str, float | None]:
        return {
            f"p{q}_ms": (round(v, 2) if (v := percentile(values, q)) is not None else None)
            for q in (50, 95, 99)
        } | {"max_ms": round(values[-1], 2) if values else None}

    assert before is not None
    return {
        "rate_per_s": args.rate,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "sent": len(measured),
        "acked": len(ack_ms),
        "arrived": len(e2e_ms),
        "errors": errors[:20],
        "error_count": len(errors),
        "ingest_to_arrival": summary(e2e_ms),
        "ingest_ack": summary(ack_ms),
        "ack_to_arrival": summary(after_ack_ms),
        "send_lag_p99_ms": round((percentile(send_lag, 99) or 0) * 1000, 2),
        "slowest": slowest,
        "cpu": meter.diff(before, after),
    }


# -- the run ------------------------------------------------------------------------------------


def code_version() -> dict[str, Any]:
    """The commit measured, and whether the working tree differs from it (it often does)."""
    version: dict[str, Any] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        version["commit"] = head.stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        version["modified"] = [line[3:] for line in status.stdout.splitlines()]
    return version


def load_conditions() -> dict[str, Any]:
    conditions: dict[str, Any] = {"cores": os.cpu_count()}
    with contextlib.suppress(OSError, AttributeError):
        conditions["loadavg"] = [round(v, 2) for v in os.getloadavg()]
    return conditions


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


async def run(args: argparse.Namespace, stamp: str) -> dict[str, Any]:
    phases = set(args.phases.split(","))
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            "events": args.events,
            "concurrency": args.concurrency,
            "max_in_flight": args.max_in_flight,
            "rate": args.rate,
            "duration": args.duration,
            "log_level": args.log_level,
            "phases": sorted(phases),
            "profile": args.profile,
            "vacuum": args.vacuum,
            "settle": args.settle,
            "db_settings": args.db_setting,
        },
        "code": code_version(),
        "postgres": await server_settings(args.admin_dsn),
        "load_before": load_conditions(),
    }
    if results["postgres"].get("autovacuum") == "off":
        log("note: autovacuum is off on this server: bench tables are never analyzed/vacuumed")
    receiver = Receiver()
    receiver.start()
    service = Service(args)
    profiler = None
    if args.profile:
        directory = RESULTS_DIR / f"{stamp}-profile"
        directory.mkdir(parents=True, exist_ok=True)
        profiler = service.profiler = Profiler(directory, args.python)
        if profiler.py_spy is None:
            log("profile: py-spy not found, only the worker's statements are timed")
        results["profile_dir"] = str(directory)
    profile = profiler.phase if profiler else no_profile

    async def profiled(name: str, phase: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
        """Run a phase under the profiler (when asked for); its report joins the figures."""
        async with profile(name) as report:
            figures = await phase
        if report:
            figures["profile"] = report
        return figures

    meter = CpuMeter(args.admin_dsn, service.database, {"receiver": receiver.process.pid or 0})
    try:
        if "raw" in phases:
            log(f"raw: {args.raw_requests} POSTs at concurrency {args.concurrency}")
            results["raw"] = await raw_phase(args, receiver, meter)
            log(f"raw: {results['raw']['requests_per_s']} requests/s")
        if phases & {"e2e", "latency"}:
            log(f"service: database {service.database}, api on port {service.api_port}")
            await service.start()
            assert service.api is not None and service.worker is not None
            meter.procs.update(api=service.api.pid, worker=service.worker.pid)
            if profiler:
                profiler.procs.update(api=service.api.pid, worker=service.worker.pid)
            async with aiohttp.ClientSession() as session:
                await service.subscribe(session, f"{receiver.base}/hook")
            await asyncio.sleep(1)  # let the worker's first housekeeping pass go by
        if "e2e" in phases:
            log(f"e2e: ingesting {args.events} events in batches of {BATCH_SIZE}")
            results["e2e"] = await profiled("e2e", e2e_phase(args, service, receiver, meter))
            log(f"e2e: {results['e2e']['deliveries_per_s']} deliveries/s")
            if args.vacuum and "latency" in phases:
                log("vacuum: VACUUM ANALYZE of the bench database (as autovacuum would)")
                conn = await asyncpg.connect(service.dsn, timeout=10)
                try:
                    await conn.execute("VACUUM ANALYZE", timeout=120)
                finally:
                    await conn.close()
            if args.settle and "latency" in phases:
                results["settle_s"] = await settle_writes(service.dsn)
                log(f"settle: e2e writes on disk after {results['settle_s']} s")
            await asyncio.sleep(1)
        if "latency" in phases:
            log(f"latency: {args.rate} events/s for {args.warmup} + {args.duration} s")
            results["latency"] = await profiled(
                "latency", latency_phase(args, service, receiver, meter)
            )
            log(f"latency: {results['latency']['ingest_to_arrival']}")
        if "raw" in phases and phases & {"e2e", "latency"}:
            # Again at the end (service idle): the ceiling of a shared or virtual machine moves.
            results["raw_after"] = await raw_phase(args, receiver, meter)
            log(f"raw (again): {results['raw_after']['requests_per_s']} requests/s")
    finally:
        results["load_after"] = load_conditions()
        if args.keep_logs:
            results["service_logs"] = str(service.log_dir)
        await service.stop()
        receiver.stop()

    raw_rates = [
        results[name]["requests_per_s"] for name in ("raw", "raw_after") if name in results
    ]
    raw_rate = max(raw_rates) if raw_rates else None  # the higher ceiling: the ratio errs low
    e2e_rate = results.get("e2e", {}).get("deliveries_per_s")
    verdict: dict[str, Any] = {}
    if raw_rate:
        verdict["raw_requests_per_s"] = raw_rate
        verdict["raw_spread"] = round(1 - min(raw_rates) / raw_rate, 3)
    if raw_rate and e2e_rate:
        verdict["ratio"] = round(e2e_rate / raw_rate, 3)
        verdict["ratio_floor"] = FLOOR_RATIO
        verdict["ratio_ok"] = verdict["ratio"] >= FLOOR_RATIO
    p99 = results.get("latency", {}).get("ingest_to_arrival", {}).get("p99_ms")
    if p99 is not None:
        verdict["p99_ms"] = p99
        verdict["p99_floor_ms"] = FLOOR_P99_MS
        verdict["p99_ok"] = p99 <= FLOOR_P99_MS
    if "e2e" in results:
        verdict["e2e_complete"] = results["e2e"]["complete"]
    if "latency" in results:
        lat = results["latency"]
        verdict["latency_complete"] = lat["arrived"] == lat["sent"]
    verdict["disturbed_phases"] = [
        name
        for name in ("raw", "e2e", "latency", "raw_after")
        if results.get(name, {}).get("cpu", {}).get("disturbed")
    ]
    results["verdict"] = verdict
    return results


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        value = f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}"
    return f"{value}{unit}"


def print_summary(results: dict[str, Any], path: Path | None) -> None:
    rows: list[tuple[str, str]] = []
    raw, e2e, lat, verdict = (results.get(k, {}) for k in ("raw", "e2e", "latency", "verdict"))
    if raw:
        after = results.get("raw_after")
        rows += [
            ("raw limit (plain aiohttp client)", _fmt(verdict["raw_requests_per_s"], " req/s")),
            (
                "  at start / at end of the run",
                f"{_fmt(raw['requests_per_s'])} / "
                f"{_fmt(after['requests_per_s'] if after else None)} req/s"
                f" ({raw['requests']} requests x {raw['concurrency']} concurrent)",
            ),
        ]
    if e2e:
        rows += [
            ("e2e deliveries/s (first→last arrival)", _fmt(e2e["deliveries_per_s"], " /s")),
            (
                "e2e deliveries/s (first ingest→last arrival)",
                _fmt(e2e["deliveries_per_s_from_ingest"], " /s"),
            ),
            (
                "  delivered distinct / events",
                f"{e2e['received_distinct']} / {e2e['events']} (duplicates {e2e['duplicates']})",
            ),
            ("  ingest (batches of 1000)", _fmt(e2e["ingest_events_per_s"], " events/s")),
            (
                "  first arrival after ingest start",
                _fmt(e2e["first_arrival_after_ingest_start_s"], " s"),
            ),
            ("  all outcomes recorded after", _fmt(e2e["all_recorded_after_ingest_start_s"], " s")),
        ]
    if "ratio" in verdict:
        ok = "ok" if verdict["ratio_ok"] else "BELOW FLOOR"
        rows.append(("ratio e2e / raw", f"{verdict['ratio']:.3f} (floor {FLOOR_RATIO}, {ok})"))
    if lat:
        lat_e2e = lat["ingest_to_arrival"]
        rows += [
            (
                f"latency at {lat['rate_per_s']:g}/s, ingest→arrival p50/p95/p99",
                " / ".join(_fmt(lat_e2e[f"p{q}_ms"]) for q in (50, 95, 99)) + " ms",
            ),
            ("  max", _fmt(lat_e2e["max_ms"], " ms")),
            (
                "  of which ingest ack p50/p99",
                f"{_fmt(lat['ingest_ack']['p50_ms'])} / {_fmt(lat['ingest_ack']['p99_ms'])} ms",
            ),
            (
                "  of which ack→arrival p50/p99",
                f"{_fmt(lat['ack_to_arrival']['p50_ms'])} / "
                f"{_fmt(lat['ack_to_arrival']['p99_ms'])} ms",
            ),
            ("  arrived / sent", f"{lat['arrived']} / {lat['sent']} (errors {lat['error_count']})"),
        ]
        slow = [e for e in lat.get("slowest", []) if e["ingest_to_arrival_ms"] > FLOOR_P99_MS]
        if slow:
            rows.append(
                (
                    f"  over {FLOOR_P99_MS:g} ms, sent at (UTC)",
                    ", ".join(
                        f"{e['sent_at_utc']} ({e['ingest_to_arrival_ms']:g}, ack {e['ack_ms']})"
                        for e in slow[:5]
                    ),
                )
            )
    if "p99_ms" in verdict:
        ok = "ok" if verdict["p99_ok"] else "ABOVE FLOOR"
        rows.append(("p99 verdict", f"{verdict['p99_ms']:.2f} ms (floor {FLOOR_P99_MS:g}, {ok})"))
    before, after = results["load_before"], results["load_after"]
    if verdict.get("raw_spread", 0) > 0.2:
        rows.append(
            (
                "WARNING",
                f"the raw limit moved {100 * verdict['raw_spread']:.0f}% between start and end:"
                " the machine's speed changed during the run, run again",
            )
        )
    if verdict.get("disturbed_phases"):
        rows.append(
            (
                "WARNING",
                f"other processes used >10% of the machine during "
                f"{', '.join(verdict['disturbed_phases'])}: figures disturbed, run again",
            )
        )
    code = results.get("code", {})
    rows.append(
        (
            "code",
            f"{code.get('commit', '?')}"
            + (
                f" + uncommitted changes in {len(code['modified'])} file(s) under src/"
                if code.get("modified")
                else ""
            ),
        )
    )
    pg = results.get("postgres", {})
    rows.append(
        (
            "postgres",
            f"{pg.get('server_version')}, autovacuum {pg.get('autovacuum')}, "
            f"synchronous_commit {pg.get('synchronous_commit')}, jit {pg.get('jit')}",
        )
    )
    rows.append(
        (
            "load average before / after",
            f"{before.get('loadavg')} / {after.get('loadavg')} ({before['cores']} cores)",
        )
    )
    for name in ("raw", "e2e", "latency", "raw_after"):
        cpu = results.get(name, {}).get("cpu")
        if not cpu:
            continue
        parts = ", ".join(f"{k} {v:.1f}" for k, v in cpu["cpu_s"].items())
        others = ", ".join(f"{k} {v:.1f}" for k, v in cpu["other_processes_top"].items())
        rows.append(
            (
                f"cpu s during {name} ({cpu['wall_s']} s wall)",
                f"{parts}; irq {_fmt(cpu.get('irq_softirq_cpu_s'))};"
                f" machine busy {_fmt(cpu.get('machine_busy_pct'))}%",
            )
        )
        rows.append(
            (
                "  other processes" + (" (DISTURBED)" if cpu["disturbed"] else ""),
                f"{cpu['other_processes_cpu_s']:.1f} cpu s" + (f": {others}" if others else ""),
            )
        )
    for name in ("e2e", "latency"):
        report = results.get(name, {}).get("profile") or {}
        statements = (report.get("worker_statements") or {}).get("statements") or {}
        for label, entry in list(statements.items())[:6]:
            calls = entry["calls"] or 1
            rows.append(
                (
                    f"  [{name}] worker SQL: {label[:44]}",
                    f"{entry['calls']} calls, {entry['seconds']:.2f} s, "
                    f"{1000 * entry['seconds'] / calls:.2f} ms avg, {entry['max_ms']:.0f} ms max, "
                    f"{entry['rows'] / calls:.1f} rows/call",
                )
            )
        for proc in ("worker", "api"):
            spy = report.get(f"{proc}_py_spy")
            if spy and spy["samples"]:
                top = ", ".join(f"{n} {p}%" for n, p in spy["self_pct"][:5])
                rows.append((f"  [{name}] {proc} top self (py-spy)", top))
    width = max(len(label) for label, _ in rows)
    print()
    print("voicehooks delivery benchmark")
    print("-" * (width + 40))
    for label, value in rows:
        print(f"{label.ljust(width)}  {value}")
    print("-" * (width + 40))
    print(f"results: {path}" if path else "results: not saved (--no-save)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000, help="events of the e2e phase")
    parser.add_argument(
        "--worker-processes",
        type=int,
        default=os.cpu_count() or 1,
        help="dispatcher processes of the worker (VOICEHOOKS_WORKER_PROCESSES, default one per "
        "core); --concurrency is split between them",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_MAX_IN_FLIGHT_PER_HOST,
        help="raw-client concurrency and the worker's VOICEHOOKS_MAX_IN_FLIGHT_PER_HOST "
        "(the receiver is one host, so this is the worker's in-flight limit against it)",
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=DEFAULT_MAX_IN_FLIGHT,
        help="the worker's VOICEHOOKS_MAX_IN_FLIGHT",
    )
    parser.add_argument("--rate", type=float, default=100.0, help="events/s of the latency phase")
    parser.add_argument("--duration", type=float, default=30.0, help="measured latency seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured latency seconds")
    parser.add_argument("--raw-requests", type=int, default=20000, help="requests of the raw phase")
    parser.add_argument("--ingest-concurrency", type=int, default=2, help="batches in flight")
    parser.add_argument("--timeout", type=float, default=120.0, help="bound of each e2e wait, s")
    parser.add_argument("--raw-timeout", type=float, default=60.0, help="bound of the raw phase")
    parser.add_argument("--log-level", default="INFO", help="VOICEHOOKS_LOG_LEVEL of api/worker")
    parser.add_argument(
        "--phases", default="raw,e2e,latency", help="comma-separated subset of raw,e2e,latency"
    )
    parser.add_argument(
        "--admin-dsn",
        default=os.environ.get("BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a Postgres connection allowed to CREATE/DROP DATABASE",
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter with voicehooks")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database")
    parser.add_argument("--keep-logs", action="store_true", help="keep the api/worker logs")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    parser.add_argument(
        "--db-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="ALTER DATABASE <bench db> SET NAME = VALUE before the service connects "
        "(repeatable; e.g. plan_cache_mode=force_custom_plan, jit=off)",
    )
    parser.add_argument(
        "--no-settle",
        dest="settle",
        action="store_false",
        help="start the latency phase without first writing the e2e phase's data to disk "
        "(CHECKPOINT, sync)",
    )
    parser.add_argument(
        "--vacuum",
        action="store_true",
        help="VACUUM ANALYZE the bench database between e2e and latency (what autovacuum "
        "would have done; for servers running with autovacuum off)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="time the worker's SQL statements and, when py-spy is installed, sample api and "
        "worker; written to bench/results/<timestamp>-profile/ (perturbs the figures)",
    )
    args = parser.parse_args(argv)
    args.max_in_flight = max(args.max_in_flight, args.concurrency)
    unknown = set(args.phases.split(",")) - {"raw", "e2e", "latency"}
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results = asyncio.run(run(args, stamp))
    results["total_s"] = round(time.monotonic() - started, 1)
    path = None
    if not args.no_save:
        path = RESULTS_DIR / f"{stamp}.json"
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
    print_summary(results, path)
    verdict = results["verdict"]
    if verdict.get("e2e_complete") is False or verdict.get("latency_complete") is False:
        return 2
    if verdict.get("ratio_ok") is False or verdict.get("p99_ok") is False:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
