"""Arrows point down: the dispatcher runs without the web layer."""

import subprocess
import sys

from tests.operations_helpers import running, service_environment
from tests.support import wait_until

WEB_FRAMEWORK = ("fastapi", "starlette")


def test_importing_the_dispatcher_leaves_the_web_framework_out():
    probe = (
        "import sys, voicehooks.dispatch.worker; "
        "print(sorted(m for m in ('fastapi', 'starlette') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def _imported(importtime_log: str) -> set[str]:
    """Top-level packages of the modules that `-X importtime` reports as imported."""
    modules = set()
    for line in importtime_log.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "package":  # the header line
                modules.add(name.split(".")[0])
    return modules


async def test_a_running_voicehooks_worker_has_not_loaded_the_web_framework(database_url, tmp_path):
    # PYTHONPROFILEIMPORTTIME makes the process name every module it imports on stderr.
    env = service_environment(database_url, PYTHONPROFILEIMPORTTIME="1")
    log = tmp_path / "worker.log"
    async with running(env, log, "worker"):
        await wait_until(lambda: "dispatcher_started" in log.read_text(), timeout=30, interval=0.05)
    imported = _imported(log.read_text())
    assert {"voicehooks", "aiohttp", "asyncpg"} <= imported  # the probe sees the imports
    assert imported & set(WEB_FRAMEWORK) == set()
