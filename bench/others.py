"""The MVP rebuild and procrastinate under the same loads as flagsched (see runs.py).

Each runs in its own database (flagsched's schema, so every system writes the
same flag, change-log and schedule rows), as its own process(es), started
before the schedules arrive. Their results are :class:`bench.runs.Run` too.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from bench.harness import Proc, World, world
from bench.runs import Run
from bench.suite import Context
from bench.workload import (
    Schedule,
    add_flags,
    add_schedules,
    applied_count,
    applied_rows,
    at_once,
    count,
    flag_keys,
    spread,
    utcnow,
    wait_for_count,
)

Starter = Callable[[World], list[Proc]]
Submit = Callable[[World, Any], None]


def _wait_log(proc: Proc, text: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in proc.log_text():
        if not proc.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{proc.label} did not start: {proc.log_text()[-2000:]}")
        time.sleep(0.05)


def _run(
    ctx: Context,
    label: str,
    schedules: Callable[[list[str], datetime], list[Schedule]],
    flags: int,
    lead_s: float | None,
    start: Starter,
    submit: Submit | None = None,
    prepare: Callable[[World], None] | None = None,
    timeout_s: float = 900,
) -> Run:
    """Start the system, insert the schedules (due ``lead_s`` ahead, or now), wait, measure."""
    with world(ctx.services, label, ctx.raw_dir, topics=False) as w, w.connect() as conn:
        if prepare:
            prepare(w)
        keys = flag_keys(flags)
        add_flags(conn, keys)
        procs = start(w)
        first_due = utcnow() + timedelta(seconds=lead_s or 0.0)
        rows = schedules(keys, first_due)
        inserted_at = utcnow()
        add_schedules(conn, rows)
        if submit:
            submit(w, conn)
        run = Run(label, len(procs), len(rows), False, first_due if lead_s else inserted_at, [])
        if lead_s and utcnow() > first_due:
            run.notes.append(f"{label}: seeding ended after the first due time")
        _, run.completed = wait_for_count(
            lambda: applied_count(conn), len(rows), timeout_s=timeout_s, procs=procs
        )
        run.applied = applied_rows(conn, ctx.services)
        run.statuses = {
            str(r[0]): int(r[1])
            for r in conn.execute("SELECT status, count(*) FROM flag_schedules GROUP BY 1")
        }
        run.peak_rss_kb = {p.label: p.status_kb("VmHWM") for p in procs}
        return run


# --- the MVP --------------------------------------------------------------------------
def _mvp_starter(interval_s: float, backoff_unit_s: float) -> Starter:
    def start(w: World) -> list[Proc]:
        args = [sys.executable, "-m", "bench.mvp_baseline", "--dsn", w.dsn]
        args += ["--interval-s", str(interval_s), "--backoff-unit-s", str(backoff_unit_s)]
        args += ["--jitter-max-s", str(backoff_unit_s / 2)]
        proc = w.start(args, "mvp")
        _wait_log(proc, "mvp loop running")
        return [proc]

    return start


def mvp_drain(
    ctx: Context,
    label: str,
    n: int,
    *,
    interval_s: float,
    backoff_unit_s: float,
    lead_s: float | None = None,
) -> Run:
    """``n`` schedules due at one instant (inserted already due unless ``lead_s``)."""
    return _run(
        ctx,
        label,
        lambda keys, due: at_once(keys, n, due),
        n,
        lead_s,
        _mvp_starter(interval_s, backoff_unit_s),
    )


def mvp_steady(
    ctx: Context,
    label: str,
    rate_per_s: float,
    duration_s: float,
    flags: int,
    *,
    interval_s: float,
    backoff_unit_s: float,
) -> Run:
    return _run(
        ctx,
        label,
        lambda keys, start: spread(keys, rate_per_s, duration_s, start),
        flags,
        4.0,
        _mvp_starter(interval_s, backoff_unit_s),
    )


# --- procrastinate ----------------------------------------------------------------------
def _procrastinate_prepare(w: World) -> None:
    from bench import procrastinate_app  # an optional dependency (the `bench` extra)

    asyncio.run(procrastinate_app.apply_schema(w.dsn))


def _procrastinate_starter(workers: int, concurrency: int) -> Starter:
    def start(w: World) -> list[Proc]:
        procs = []
        for i in range(workers):
            args = [sys.executable, "-m", "bench.procrastinate_app", "--dsn", w.dsn]
            procs.append(w.start([*args, "--concurrency", str(concurrency)], f"procrastinate-{i}"))
        with w.connect() as conn:
            wait_for_count(
                lambda: count(conn, "SELECT count(*) FROM procrastinate_workers"),
                workers,
                timeout_s=60,
                procs=procs,
                interval_s=0.1,
            )
        return procs

    return start


def _procrastinate_submit(due_now: bool) -> Submit:
    def submit(w: World, conn: Any) -> None:
        rows = conn.execute("SELECT id, scheduled_at FROM flag_schedules ORDER BY id").fetchall()
        jobs = [(int(r[0]), None if due_now else r[1]) for r in rows]
        from bench import procrastinate_app

        asyncio.run(procrastinate_app.defer(w.dsn, jobs))

    return submit


def procrastinate_drain(ctx: Context, label: str, n: int, *, workers: int, concurrency: int) -> Run:
    """``n`` jobs deferred already due (a backlog), one per schedule."""
    return _run(
        ctx,
        label,
        lambda keys, due: at_once(keys, n, due),
        n,
        None,
        _procrastinate_starter(workers, concurrency),
        _procrastinate_submit(True),
        _procrastinate_prepare,
    )


def procrastinate_steady(
    ctx: Context,
    label: str,
    rate_per_s: float,
    duration_s: float,
    flags: int,
    *,
    workers: int,
    concurrency: int,
) -> Run:
    """One job per schedule, deferred ahead with ``schedule_at`` = its due time."""
    return _run(
        ctx,
        label,
        lambda keys, start: spread(keys, rate_per_s, duration_s, start),
        flags,
        4.0 + rate_per_s * duration_s / 1000,
        _procrastinate_starter(workers, concurrency),
        _procrastinate_submit(False),
        _procrastinate_prepare,
    )
