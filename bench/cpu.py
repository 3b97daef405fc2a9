"""Where the machine's cores went during a run: CPU seconds by component, from /proc.

Kafka is the ``java`` process, PostgreSQL every ``postgres`` process (postmaster
and backends); flagsched's processes are named by the caller. CPU of processes
that exit between two snapshots is not counted (none of the measured ones do).
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


@dataclass
class Snapshot:
    """CPU seconds per (component, pid) and the wall clock, at one moment."""

    at: float
    per_pid: dict[int, tuple[str, float]] = field(default_factory=dict)


def snapshot(named: dict[int, str]) -> Snapshot:
    """CPU seconds of every process so far, keyed by pid with its component name."""
    snap = Snapshot(time.monotonic())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            stat = (entry / "stat").read_text()
            comm = (entry / "comm").read_text().strip()
        except OSError:  # exited meanwhile
            continue
        # fields after the ")" that closes the command name: utime is the 12th, stime 13th
        fields = stat[stat.rindex(")") + 2 :].split()
        seconds = (int(fields[11]) + int(fields[12])) * _TICK_S
        snap.per_pid[pid] = (_component(pid, comm, named), seconds)
    return snap


def _component(pid: int, comm: str, named: dict[int, str]) -> str:
    if pid in named:
        return named[pid]
    if comm == "java":
        return "kafka"
    if comm.startswith("postgres"):
        return "postgresql"
    return "other"


def used(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds each component used between two snapshots (new processes count whole)."""
    out: dict[str, float] = defaultdict(float)
    for pid, (name, seconds) in after.per_pid.items():
        start = before.per_pid.get(pid)
        out[name] += seconds - (start[1] if start and start[0] == name else 0.0)
    return dict(out)


def describe(cpu_s: dict[str, float], wall_s: float, schedules: int, cores: int) -> str:
    """One line: CPU ms per 1000 schedules by component, and how busy the cores were."""
    total = sum(cpu_s.values())
    parts = ", ".join(
        f"{name} {1000 * s / schedules * 1000:,.0f}"
        for name, s in sorted(cpu_s.items(), key=lambda kv: -kv[1])
        if s >= 0.01
    )
    busy = total / (wall_s * cores) if wall_s > 0 else float("nan")
    return (
        f"CPU ms per 1000 schedules: {parts} (total {1000 * total / schedules * 1000:,.0f});"
        f" the {cores} cores were {busy:.0%} busy over the {wall_s:.1f} s run"
    )
