"""CPU accounting (Linux /proc; empty elsewhere): where the machine's cores went in a phase."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg

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
