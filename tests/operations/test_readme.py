"""README.md works as written: its blocks are run here (see tests/readme_blocks.py for how
they are marked and the only changes made to them: ports, the example database URL).

The walk-through runs as a newcomer runs it, in terminals (bash sessions) in a fresh
directory whose `.venv/bin/voicehooks` is this project: `serve` with its embedded Postgres,
`listen`, then bootstrap, one subscription and `trigger --call`; the receiver must print the
call's deliveries verified and in order, line for line as README shows them. The receiving
examples (Python, FastAPI, Flask; Node in test_node_verifiers.py) verify real deliveries.
"""

import ast
import asyncio
import contextlib
import os
import re
import signal
import sys
import threading
import time
import types
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from tests.delivery_helpers import ingest, logs
from tests.operations_helpers import free_port, wait_for_readyz
from tests.readme_blocks import Block, block, blocks, localize
from tests.support import call_event, create_subscription, new_database, wait_until

# How each marked block is run: by the walk-through, or by an example's test.
WALK_THROUGH = {"serve", "listen", "call", "listen-output", "ingest", "portal", "operate"}
PRODUCTION = {"production", "production-api", "production-worker"}
EXAMPLES = {"python-receiver", "python-standardwebhooks", "python-bird", "fastapi", "flask"}
NODE = {"node"}  # tests/receiving/test_node_verifiers.py
README_KEY = "mysecretkey-of-my-own"
EXAMPLE_DATABASE_URL = "postgresql://user:pass@db:5432/voicehooks"
# A JSON answer with an error status (problem+json): no README command may get one.
PROBLEM = re.compile(r'"status":\s*[45]\d\d')


def test_every_block_is_marked_and_run():
    found = blocks()
    first, *others = found
    assert first.language == "sh" and "pytest" in first.code  # install and run, install and test
    drawings = [b for b in others if b.language == ""]  # the architecture diagram
    unmarked = [b.line for b in others if b.name is None and b.language != ""]
    assert unmarked == [], f"README blocks without a readme-test marker, at lines {unmarked}"
    names = [b.name for b in others if b.name is not None]
    assert len(names) == len(set(names)), "a marker names two blocks"
    assert set(names) == WALK_THROUGH | PRODUCTION | EXAMPLES | NODE
    assert all("voicehooks" not in b.code for b in drawings)


def test_the_bootstrap_one_liner_is_python_3_11():
    """Backslashes inside f-string expressions are 3.12+ (they were README's first bug)."""
    for found in blocks():
        for script in re.findall(r"python3 -c '(.*?)'", found.code, flags=re.S):
            ast.parse(script, f"README.md:{found.line}", feature_version=(3, 11))


# -- terminals ----------------------------------------------------------------------------------


class Terminal:
    """A bash session: blocks run one after another in it, and its variables carry over.

    Each terminal is a session (process group) of its own: closing it stops what it started.
    """

    def __init__(self, cwd: Path, env: dict[str, str], name: str) -> None:
        self.cwd, self.env, self.name = cwd, env, name
        self.process: asyncio.subprocess.Process | None = None
        self.services = 0

    async def start(self) -> "Terminal":
        self.process = await asyncio.create_subprocess_exec(
            "bash", "--noprofile", "--norc",
            cwd=self.cwd, env=self.env, start_new_session=True,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        return self

    async def run(self, readme_block: Block, code: str, timeout: float = 120) -> str:
        """Run a block to its end; every command of it must succeed. Its output."""
        assert self.process is not None and self.process.stdin and self.process.stdout
        marker = f"__done_{uuid.uuid4().hex}__"
        self.process.stdin.write(f"{code}\necho\necho {marker} $?\n".encode())
        await self.process.stdin.drain()
        output: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            line = await asyncio.wait_for(self.process.stdout.readline(), max(remaining, 0.1))
            if not line:
                raise AssertionError(f"terminal {self.name} exited: {''.join(output)}")
            text = line.decode(errors="replace")
            if text.startswith(marker):
                status = int(text.split()[1])
                break
            output.append(text)
        printed = "".join(output)
        where = f"README.md:{readme_block.line} ({readme_block.name})"
        assert status == 0, f"{where} failed with {status}:\n{printed}"
        assert not PROBLEM.search(printed), f"{where} got an error answer:\n{printed}"
        return printed

    async def start_service(self, code: str) -> Path:
        """Start a block that runs until stopped (a server), in the background; its log."""
        assert self.process is not None and self.process.stdin
        self.services += 1
        log = self.cwd / f"{self.name}-{self.services}.log"
        self.process.stdin.write(f"(\n{code}) > {log} 2>&1 &\n".encode())
        await self.process.stdin.drain()
        return log

    async def close(self) -> None:
        """SIGTERM to the terminal's session (its services stop cleanly), SIGKILL if need be."""
        if self.process is None or self.process.returncode is not None:
            return
        group = self.process.pid
        os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                break
            await asyncio.sleep(0.1)
        else:
            os.killpg(group, signal.SIGKILL)
        await self.process.wait()


def read(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else ""


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A fresh directory where `.venv/bin/voicehooks` is this project, and its environment:
    no VOICEHOOKS_* setting but the data directory of the embedded Postgres."""
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    shim = bin_dir / "voicehooks"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m voicehooks "$@"\n')
    shim.chmod(0o755)
    env = {name: value for name, value in os.environ.items() if not name.startswith("VOICEHOOKS_")}
    env.update(
        VOICEHOOKS_DATA_DIR=str(tmp_path / "data"),
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
    )
    return tmp_path, env


@contextlib.asynccontextmanager
async def terminals(cwd: Path, env: dict[str, str], *names: str) -> AsyncIterator[list[Terminal]]:
    opened = [await Terminal(cwd, env, name).start() for name in names]
    try:
        yield opened
    finally:
        for terminal in reversed(opened):  # the service (first) stops last
            await terminal.close()


def line_shape(line: str) -> str:
    """A line of `listen` with what changes from run to run (time, call id, latency) masked."""
    line = re.sub(r"^\d\d:\d\d:\d\d", "hh:mm:ss", line)
    line = re.sub(r"call-[0-9a-f]{12}", "call-<id>", line)
    return re.sub(r"\d+\.\d s", "<n> s", line)


async def test_the_walk_through(sandbox):
    cwd, env = sandbox
    api, listener = free_port(), free_port()
    base = f"http://127.0.0.1:{api}"

    def code(name: str) -> str:
        return localize(block(name).code, api=api, listener=listener)

    async with terminals(cwd, env, "serve", "listen", "third") as (first, second, third):
        serve_log = await first.start_service(code("serve"))
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            try:
                await wait_for_readyz(http, timeout=120)
            except AssertionError:
                raise AssertionError(f"serve did not get ready:\n{read(serve_log)}") from None
        listen_log = await second.start_service(code("listen"))
        await wait_until(lambda: "voicehooks listen: on" in read(listen_log), timeout=30)

        printed = await third.run(block("call"), code("call"))
        assert '"url":"http://127.0.0.1:' in printed  # the created subscription
        triggered = [line for line in printed.splitlines() if "→ 202" in line]
        assert [line.split("  ")[2] for line in triggered] == [
            "starting",
            "ringing",
            "ongoing",
            "completed",
        ]

        def deliveries() -> list[str]:
            return [line for line in read(listen_log).splitlines() if "voice.inbound" in line]

        await wait_until(lambda: len(deliveries()) >= 4, timeout=30, interval=0.1)
        shown = block("listen-output").code.splitlines()
        assert [line_shape(line) for line in deliveries()[:4]] == [
            line_shape(line) for line in shown
        ], read(listen_log)

        printed = await third.run(block("ingest"), code("ingest"))
        assert '"deliveries":1' in printed
        await wait_until(lambda: len(deliveries()) >= 5, timeout=30, interval=0.1)
        fifth = deliveries()[4]
        assert " call-1 " in fifth and "ringing" in fifth and fifth.endswith("✓ verified")

        printed = await third.run(block("portal"), code("portal"))
        [link] = [line for line in printed.splitlines() if "/portal/enter?token=" in line]
        path = link[link.index("/portal/enter") :]
        async with httpx.AsyncClient(base_url=base, timeout=10) as browser:
            entered = await browser.get(path)
            assert entered.status_code == 303 and entered.headers["location"] == "/portal/"
            deliveries_page = await browser.get("/portal/deliveries")
            assert deliveries_page.status_code == 200
            assert "call-1" in deliveries_page.text

        printed = await third.run(block("operate"), code("operate"))
        assert '"requeued":' in printed and '"deliveryId":' in printed
        assert "voicehooks_events_ingested_total" in printed
        assert "Traceback" not in read(serve_log)


async def test_running_in_production(sandbox, server_url):
    cwd, env = sandbox
    api = free_port()
    async with new_database(server_url, "voicehooks_readme") as database_url:

        def code(name: str) -> str:
            text = localize(block(name).code, api=api)
            assert name != "production" or EXAMPLE_DATABASE_URL in text
            return text.replace(EXAMPLE_DATABASE_URL, database_url)

        async with terminals(cwd, env, "production") as (terminal,):
            await terminal.run(block("production"), code("production"))
            api_log = await terminal.start_service(code("production-api"))
            worker_log = await terminal.start_service(code("production-worker"))
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api}", timeout=10) as http:
                try:
                    await wait_for_readyz(http, timeout=60)
                except AssertionError:
                    raise AssertionError(f"api did not get ready:\n{read(api_log)}") from None
            # Two dispatcher processes.
            await wait_until(lambda: read(worker_log).count("dispatcher_started") == 2, timeout=60)


# -- the receiving examples, on real deliveries -------------------------------------------------


def example(name: str, **ports: int) -> types.ModuleType:
    """README's block, run as a module of its own."""
    found = block(name)
    module = types.ModuleType(f"readme_{name.replace('-', '_')}")
    sys.modules[module.__name__] = module
    code = localize(found.code, **ports)
    exec(compile(code, f"README.md:{found.line}", "exec"), module.__dict__)
    return module


async def delivered(client, tenant, receiver, path: str, status: str = "ringing") -> Any:
    """A real delivery of the dispatcher to the receiver, signed with README's key."""
    await create_subscription(client, tenant, url=f"{receiver.url}{path}", signingKey=README_KEY)
    await ingest(client, call_event(tenant.workspace_id, status=status))
    return await wait_until(lambda: receiver.to(path) and receiver.to(path)[0])


async def test_the_python_receivers(client, tenant, receiver, dispatcher, capsys):
    request = await delivered(client, tenant, receiver, "/hook")
    forged = request.body.replace(b"ringing", b"Ringing")

    receiver_example = example("python-receiver", listener=receiver.port)
    event = receiver_example.receive(request.body, request.headers)
    assert event["payload"]["status"] == "ringing"
    assert receiver_example.receive(forged, request.headers) is None
    assert "refused: no webhook-signature entry matches" in capsys.readouterr().out

    from standardwebhooks import WebhookVerificationError

    standard_example = example("python-standardwebhooks")
    assert standard_example.receive(request.body, request.headers) == event
    with pytest.raises(WebhookVerificationError):
        standard_example.receive(forged, request.headers)

    bird = example("python-bird").bird_verifies
    headers = {name.lower(): value for name, value in request.headers.items()}
    url = f"{receiver.url}/hook"
    assert bird(request.body, headers, url, README_KEY) is True
    assert bird(forged, headers, url, README_KEY) is False
    assert bird(request.body, headers, url + "?x=1", README_KEY) is False
    assert bird(request.body, headers, url, "another-key-0001") is False


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # the test's process keeps its own signal handling
        yield


async def _answered(client, tenant, subscription_id: str) -> list[dict]:
    async def attempted() -> list[dict]:
        return await logs(client, tenant, subscription_id)

    return await wait_until(attempted)


async def test_the_fastapi_dependency(client, tenant, dispatcher, capsys):
    port = free_port()
    module = example("fastapi", listener=port)
    server = _Server(uvicorn.Config(module.app, port=port, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started)
        url = f"http://127.0.0.1:{port}/hook"
        subscription = await create_subscription(client, tenant, url=url, signingKey=README_KEY)
        await ingest(client, call_event(tenant.workspace_id, call_id="call-fa", status="ongoing"))
        (attempt,) = await _answered(client, tenant, subscription["id"])
        assert attempt["responseStatusCode"] == 204
        assert "voice.inbound call-fa ongoing" in capsys.readouterr().out

        async with httpx.AsyncClient() as http:
            forged = await http.post(url, content=b"{}", headers={"webhook-id": "x"})
        assert forged.status_code == 400
        assert "header webhook-timestamp is missing" in forged.json()["detail"]
    finally:
        server.should_exit = True
        await task


async def test_the_flask_view(client, tenant, dispatcher, capsys):
    from werkzeug.serving import make_server

    port = free_port()
    module = example("flask", listener=port)
    server = make_server("127.0.0.1", port, module.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}/hook"
        subscription = await create_subscription(client, tenant, url=url, signingKey=README_KEY)
        await ingest(client, call_event(tenant.workspace_id, call_id="call-fl", status="busy"))
        (attempt,) = await _answered(client, tenant, subscription["id"])
        assert attempt["responseStatusCode"] == 204
        assert "voice.inbound call-fl busy" in capsys.readouterr().out

        async with httpx.AsyncClient() as http:
            forged = await http.post(url, content=b"{}", headers={"webhook-id": "x"})
        assert forged.status_code == 400
        assert "header webhook-timestamp is missing" in forged.text
    finally:
        server.shutdown()
        thread.join(10)
