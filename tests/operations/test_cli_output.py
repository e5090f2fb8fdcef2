"""SPEC §5: what the `voicehooks` command tells the person who runs it (real processes)."""

import asyncio
import json
import os
import re
import signal

import httpx
import pytest
from sqlalchemy.engine import make_url

import voicehooks
from tests.operations_helpers import free_port, run_voicehooks, spawn_voicehooks
from tests.support import TEST_ENCRYPTION_KEY, new_database, wait_until

COMMANDS_WITH_A_DATABASE = ("serve", "api", "worker", "migrate", "bootstrap")


def _environment(**values: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("VOICEHOOKS_")}
    env.update(values, COLUMNS="200")
    return env


def _said(stderr: str, about: str) -> list[str]:
    """What the command said about something (stderr is JSON lines, not being a terminal)."""
    events = [json.loads(line)["event"] for line in stderr.splitlines() if line.startswith("{")]
    return [event for event in events if about in event]


async def test_version():
    code, stdout, _ = await run_voicehooks(_environment(), "--version")
    assert code == 0
    assert stdout == f"voicehooks {voicehooks.__version__}\n"


@pytest.mark.parametrize("command", COMMANDS_WITH_A_DATABASE)
async def test_every_help_names_the_environment_it_reads(command):
    code, stdout, _ = await run_voicehooks(_environment(), command, "--help")
    assert code == 0
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", stdout).split())
    assert "VOICEHOOKS_DATABASE_URL" in text
    assert "VOICEHOOKS_DATA_DIR" in text
    assert "When it is unset, this command starts an embedded PostgreSQL" in text
    if command in ("serve", "api"):
        assert "VOICEHOOKS_INGEST_TOKEN" in text


def _with_a_password(url: str) -> tuple[str, str]:
    """The URL with a password in it (the local test server trusts, so any password works)."""
    parsed = make_url(url)
    password = parsed.password or "s3cret-password-of-the-test"
    return parsed.set(password=password).render_as_string(hide_password=False), str(password)


async def test_migrate_says_what_it_did_and_where_without_the_password(server_url):
    async with new_database(server_url, "voicehooks_cli_migrate") as fresh:
        url, password = _with_a_password(fresh)
        env = _environment(
            VOICEHOOKS_DATABASE_URL=url, VOICEHOOKS_ENCRYPTION_KEYS=TEST_ENCRYPTION_KEY
        )
        where = f"{make_url(fresh).host}:{make_url(fresh).port}/{make_url(fresh).database}"

        code, stdout, stderr = await run_voicehooks(env, "migrate", timeout=60)
        assert code == 0, stderr
        assert stdout == ""
        (line,) = _said(stderr, "schema")
        assert where in line and "migrated from nothing to revision" in line, line
        assert password not in stderr

        code, _, stderr = await run_voicehooks(env, "migrate", timeout=60)
        assert code == 0, stderr
        (line,) = _said(stderr, "schema")
        assert where in line and "already current" in line, line


async def test_serve_says_where_it_listens(database_url, tmp_path):
    url, password = _with_a_password(database_url)
    port = free_port()
    log = tmp_path / "serve.err"
    with log.open("wb") as stderr:
        serve = await spawn_voicehooks(
            _environment(
                VOICEHOOKS_DATABASE_URL=url, VOICEHOOKS_ENCRYPTION_KEYS=TEST_ENCRYPTION_KEY
            ),
            "serve",
            "--port",
            str(port),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )
    try:

        def listening() -> list[str]:
            if serve.returncode is not None:
                raise AssertionError(log.read_text())
            return _said(log.read_text(), "listening on")

        (line,) = await wait_until(listening, timeout=60, interval=0.1)
        assert f"listening on http://127.0.0.1:{port} " in line
        assert f"/{make_url(database_url).database})" in line
        assert password not in log.read_text()
        # It said so once the port answers.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/healthz")).status_code == 200
        assert _said(log.read_text(), "schema already current")
    finally:
        serve.send_signal(signal.SIGTERM)
        await asyncio.wait_for(serve.wait(), 30)
