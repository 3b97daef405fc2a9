"""flagsched end to end: one dispatcher and N worker processes on a seeded database.

Two shapes of load:

* ``drain``: ``n`` schedules all due at one instant T (a backlog / a burst).
  Throughput is ``n / (last applied - T)``.
* ``steady``: schedules due at a steady rate for a while, optionally with a
  fraction of their flags locked (real ``FOR UPDATE`` locks) for a bounded window
  so those applies fail with lock_contention and are retried through the tiers.

In both, the workers are started and have joined the group, the rows are
seeded, and then the dispatcher starts; T is far enough ahead that everything
is up before anything is due (checked and reported).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench import cpu
from bench.harness import (
    Proc,
    World,
    consumed_partitions,
    group_lag,
    wait_workers_ready,
    world,
)
from bench.suite import Context
from bench.workload import (
    Applied,
    Attempt,
    LockHolder,
    add_flags,
    add_schedules,
    applied_count,
    applied_rows,
    at_once,
    attempts,
    finished_count,
    flag_keys,
    spread,
    utcnow,
    wait_for_count,
)

log = logging.getLogger("bench")


@dataclass
class Run:
    """What one flagsched run measured."""

    label: str
    workers: int
    expected: int
    completed: bool
    start: datetime
    applied: list[Applied]
    attempts: list[Attempt] = field(default_factory=list)
    peak_rss_kb: dict[str, int | None] = field(default_factory=dict)
    due_topic: str = ""
    late_start_s: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    failing_keys: set[str] = field(default_factory=set)
    profile: Path | None = None
    notes: list[str] = field(default_factory=list)
    #: CPU seconds by component from the insert to the last applied (drain runs).
    cpu_s: dict[str, float] = field(default_factory=dict)
    cpu_wall_s: float = 0.0

    @property
    def span_s(self) -> float:
        if not self.applied:
            return float("nan")
        return (max(a.applied for a in self.applied) - self.start).total_seconds()

    @property
    def throughput(self) -> float:
        normal = [a for a in self.applied if a.priority == "normal"]
        if not normal:
            return 0.0
        span = (max(a.applied for a in normal) - self.start).total_seconds()
        return len(normal) / span if span > 0 else float("nan")

    def latencies(self, priority: str | None = None, healthy_only: bool = False) -> list[float]:
        return [
            a.latency_ms
            for a in self.applied
            if (priority is None or a.priority == priority)
            and not (healthy_only and a.flag_key in self.failing_keys)
        ]


def _start_workers(w: World, n: int) -> list[Proc]:
    procs = [w.worker(f"worker-{i}") for i in range(n)]
    wait_workers_ready(w, procs, consumed_partitions(w))
    return procs


def _start_dispatcher(w: World, due: datetime | None, run: Run) -> Proc:
    """Start the dispatcher and wait for it to be connected; note if that was after ``due``."""
    d = w.dispatcher()
    deadline = time.monotonic() + 60
    while "dispatcher publishing" not in d.log_text():
        if not d.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"dispatcher did not start: {d.log_text()[-2000:]}")
        time.sleep(0.05)
    late = 0.0 if due is None else (utcnow() - due).total_seconds()
    if late > 0:
        run.late_start_s = late
        run.notes.append(f"{run.label}: the dispatcher was up {late:.2f}s after the due time")
    return d


def _profiler(target: Proc, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy attached to ``target`` (wall clock, idle frames included), raw collapsed stacks."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        log.warning("py-spy not installed: no profile (pip install py-spy)")
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    args = [exe, "record", "--pid", str(target.pid), "--idle", "--rate", "100"]
    args += ["--format", "raw", "--output", str(out)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _collect(w: World, run: Run, conn: Any, workers: list[Proc]) -> None:
    if not run.completed:
        layout = w.layout
        lag = group_lag(w.services.kafka, w.settings.group_id, layout.consumed)
        lag |= group_lag(w.services.kafka, w.settings.group_id + ".priority", [layout.priority])
        run.notes.append(f"{run.label}: incomplete; Kafka end/committed offsets: {lag}")
    run.applied = applied_rows(conn, w.services)
    run.attempts = attempts(conn)
    run.statuses = {
        str(r[0]): int(r[1])
        for r in conn.execute("SELECT status, count(*) FROM flag_schedules GROUP BY 1")
    }
    run.peak_rss_kb = {p.label: p.status_kb("VmHWM") for p in workers}


def drain(
    ctx: Context,
    label: str,
    *,
    workers: int,
    n: int,
    announce_s: float | None = None,
    critical_every_s: float | None = None,
    profile: bool = False,
    timeout_s: float = 900,
    **overrides: Any,
) -> Run:
    """``n`` normal schedules on ``n`` flags, all due at one instant T.

    ``announce_s`` None: a backlog; the rows are inserted already due (T is the insert's
    commit). Otherwise they are inserted ``announce_s`` ahead of T (time for the
    dispatcher's pre-dispatch to act). Either way the dispatcher and the workers are
    running before the rows arrive, as in production. ``critical_every_s`` adds a
    trickle of critical schedules, each due when inserted, from T until the end.
    """
    with world(ctx.services, label, ctx.raw_dir, **overrides) as w, w.connect() as conn:
        keys = flag_keys(n)
        add_flags(conn, keys + flag_keys(200, "crit"))
        procs = _start_workers(w, workers)
        spy = None
        if profile:
            spy = _profiler(procs[0], ctx.raw_dir / label / "worker-0.pyspy.txt")
        run = Run(label, workers, n, False, utcnow(), [], due_topic=w.layout.due)
        dispatcher = _start_dispatcher(w, None, run)
        named = {p.pid: "workers" for p in procs} | {dispatcher.pid: "dispatcher"}
        cpu_before = cpu.snapshot(named | {os.getpid(): "bench"})
        due = utcnow() + timedelta(seconds=announce_s or 0.0)
        add_schedules(conn, at_once(keys, n, due))
        run.start = due if announce_s is not None else utcnow()
        if announce_s is not None and utcnow() > due:
            run.notes.append(
                f"{label}: seeding ended {(utcnow() - due).total_seconds():.1f}s after the due time"
            )
        trickle = _Trickle(w.dsn, run.start, critical_every_s) if critical_every_s else None
        if trickle:
            trickle.start()
        _, run.completed = wait_for_count(
            lambda: applied_count(conn, exclude_prefix="crit-"),
            n,
            timeout_s=timeout_s,
            procs=procs,
        )
        cpu_after = cpu.snapshot(named | {os.getpid(): "bench"})
        run.cpu_s = cpu.used(cpu_before, cpu_after)
        run.cpu_wall_s = cpu_after.at - cpu_before.at
        if trickle:
            trickle.stop()
            wait_for_count(lambda: applied_count(conn), n + trickle.sent, timeout_s=60)
        _collect(w, run, conn, procs)
        w.stop_all()
        if spy is not None:
            spy.wait(timeout=60)
            run.profile = ctx.raw_dir / label / "worker-0.pyspy.txt"
        return run


class _Trickle:
    """Inserts one critical schedule, due at once, every ``every_s`` (each on its own flag)."""

    def __init__(self, dsn: str, start: datetime, every_s: float) -> None:
        self._dsn, self._start, self._every_s = dsn, start, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="critical-trickle", daemon=True)
        self.sent = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        import psycopg

        keys = flag_keys(200, "crit")
        with psycopg.connect(self._dsn, autocommit=True) as conn:
            self._stop.wait(max(0.0, (self._start - utcnow()).total_seconds()))
            while not self._stop.is_set():
                add_schedules(conn, [(keys[self.sent % len(keys)], utcnow(), "critical")])
                self.sent += 1
                self._stop.wait(self._every_s)


def steady(
    ctx: Context,
    label: str,
    *,
    workers: int,
    rate_per_s: float,
    duration_s: float,
    flags: int,
    fail_fraction: float = 0.0,
    lock_hold_s: float = 0.0,
    timeout_s: float = 600,
    **overrides: Any,
) -> Run:
    """Schedules due at ``rate_per_s`` for ``duration_s``; ``fail_fraction`` of the flags
    locked for ``lock_hold_s`` from the first due time."""
    with world(ctx.services, label, ctx.raw_dir, **overrides) as w, w.connect() as conn:
        keys = flag_keys(flags)
        add_flags(conn, keys)
        failing = set(keys[: round(flags * fail_fraction)])
        procs = _start_workers(w, workers)
        start = utcnow() + timedelta(seconds=4)
        n = add_schedules(conn, spread(keys, rate_per_s, duration_s, start))
        run = Run(label, workers, n, False, start, [], due_topic=w.layout.due)
        run.failing_keys = failing
        _start_dispatcher(w, start, run)
        holder = LockHolder(w.dsn, sorted(failing), start - timedelta(seconds=1), lock_hold_s + 1)
        with holder if failing else _Null():
            _, run.completed = wait_for_count(
                lambda: finished_count(conn),
                n,
                timeout_s=duration_s + timeout_s,
                procs=procs,
            )
        _collect(w, run, conn, procs)
        return run


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
