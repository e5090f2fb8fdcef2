"""SPEC §5: the embedded PostgreSQL of `serve` without a database URL, with real processes.

The last process using a data directory stops its server, also after an earlier process on
it was killed with SIGKILL (which leaves the server running, and used to leave it running
for good).
"""

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import httpx
import psutil

from tests.operations_helpers import free_port, run_voicehooks, spawn_voicehooks
from tests.support import wait_until

START_TIMEOUT = 120.0


def _environment(data_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("VOICEHOOKS_")}
    env["VOICEHOOKS_DATA_DIR"] = str(data_dir)
    return env


def postgres_processes(pgdata: Path) -> list[psutil.Process]:
    """The running postgres processes serving this data directory."""
    found = []
    for process in psutil.process_iter(["name", "cmdline", "status"]):
        info = process.info
        if (
            info["name"] == "postgres"
            and info["status"] != psutil.STATUS_ZOMBIE
            and str(pgdata) in (info["cmdline"] or [])
        ):
            found.append(process)
    return found


@contextlib.asynccontextmanager
async def serving(env: dict[str, str], log: Path):
    """`voicehooks serve` on a free port, ready; yields (process, client)."""
    port = free_port()
    with log.open("ab") as stderr:
        process = await spawn_voicehooks(
            env, "serve", "--port", str(port), stdout=asyncio.subprocess.DEVNULL, stderr=stderr
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:

            async def ready() -> bool:
                if process.returncode is not None:
                    raise AssertionError(f"serve exited: {log.read_text()}")
                try:
                    return (await http.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(ready, timeout=START_TIMEOUT, interval=0.2)
            said = [line for line in log.read_text().splitlines() if "listening on" in line]
            assert f"listening on http://127.0.0.1:{port} (database: embedded at " in said[-1]
            yield process, http
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_clean_stop_after_a_kill_stops_the_embedded_server(tmp_path):
    data_dir = tmp_path / "data"
    pgdata = data_dir.resolve() / "pgdata"
    env = _environment(data_dir)
    log = tmp_path / "serve.log"
    try:
        async with serving(env, log) as (crashed, _):
            assert postgres_processes(pgdata), "the embedded server runs"
            crashed.kill()  # SIGKILL: no clean-up of any kind
            await crashed.wait()
        assert postgres_processes(pgdata), "a killed serve leaves its database running"

        async with serving(env, log) as (serve, http):
            # Another process on the same data directory comes and goes: the server stays.
            code, _, stderr = await run_voicehooks(env, "bootstrap", timeout=START_TIMEOUT)
            assert code == 0, stderr
            assert (await http.get("/readyz")).status_code == 200

            serve.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(serve.wait(), 60) == 0, log.read_text()

        # pg_ctl stop waits for the server to end; the wait here only bounds the check.
        await wait_until(lambda: not postgres_processes(pgdata), timeout=20, interval=0.2)
    finally:
        for process in postgres_processes(pgdata):  # started by this test's processes
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


async def test_the_server_starts_again_after_the_last_user_stopped_it(tmp_path):
    data_dir = tmp_path / "data"
    pgdata = data_dir.resolve() / "pgdata"
    env = _environment(data_dir)
    try:
        for _ in range(2):
            code, stdout, stderr = await run_voicehooks(env, "bootstrap", timeout=START_TIMEOUT)
            assert code == 0, stderr
            assert '"accessKey"' in stdout
            assert not postgres_processes(pgdata), "bootstrap alone stops what it started"
    finally:
        for process in postgres_processes(pgdata):
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
