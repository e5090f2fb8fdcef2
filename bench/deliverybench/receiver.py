"""The receiver (a minimal aiohttp server in its own process, so that it never shares the
load generator's event loop) and the dead host (accepts TCP connections, never answers)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import signal
import socket
import time
from typing import Any

import aiohttp
from aiohttp import web

DEAD_HOST = "127.0.0.2"


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


async def receiver_stats(session: aiohttp.ClientSession, base: str, detail: bool = False) -> Any:
    params = {"detail": "1"} if detail else {}
    async with session.get(f"{base}/_stats", params=params) as response:
        return await response.json()


async def receiver_reset(session: aiohttp.ClientSession, base: str, phase: str) -> None:
    async with session.post(f"{base}/_reset", params={"phase": phase}) as response:
        response.raise_for_status()


class DeadHost:
    """A host that accepts connections and reads requests but never answers: what a hung
    receiver looks like to a sender, which then waits for its own timeout."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._held: set[asyncio.StreamWriter] = set()
        self.port = 0
        self.connections = 0

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._held.add(writer)
        try:
            while await reader.read(65536):
                pass
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._held.discard(writer)
            writer.close()

    async def start(self) -> None:
        # Another loopback address: the service bounds concurrency per host name, and a
        # dead host on the receiver's own address would be the same destination.
        self._server = await asyncio.start_server(self._hold, DEAD_HOST, 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{DEAD_HOST}:{self.port}/hook"

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._held):
            writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)
