"""Optional profiling (--profile): py-spy samples of api and worker, the worker's statements."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any


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
