"""The delivery benchmark's command line: what a user running `bench/delivery.py` sees."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "delivery.py"
PHASES = ("raw", "e2e", "latency", "analyze-idle", "many-subscriptions", "dead-host", "pgqueuer")


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=60
    )


def test_help_lists_every_phase_and_the_run_options():
    done = _bench("--help")
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0] for line in done.stdout.split("phases:")[1].splitlines() if line}
    assert listed == set(PHASES)
    for option in ("--runs", "--embedded", "--no-embedded", "--dead-for", "--many-subscriptions"):
        assert option in done.stdout


def test_an_unknown_phase_is_refused_before_anything_starts():
    done = _bench("--phases", "e2e,ingest", "--no-save")
    assert done.returncode == 2
    assert "unknown phases: ingest" in done.stderr
