"""Arrows point down: the dispatcher runs without the web layer."""

import subprocess
import sys


def test_importing_the_dispatcher_leaves_the_web_framework_out():
    probe = (
        "import sys, voicehooks.dispatch.worker; "
        "print(sorted(m for m in ('fastapi', 'starlette') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
