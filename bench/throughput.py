"""1. Throughput: schedules applied per second end to end, against two ceilings.

A backlog of schedules (one per flag, all already due when inserted, with the
dispatcher and workers running) is drained by 1 and by 2 worker processes.
Throughput = schedules / (last applied - insert). The ceilings are measured in
the same run: a bare kafka-python consumer reading the same records (best of 3)
and a batched PostgreSQL apply of the same schedules (see ceilings.py).
Target: >= 0.5 x the lower ceiling.
"""

from __future__ import annotations

import os
import shutil

from bench import ceilings, cpu, profiling, runs, shared
from bench.runs import Run
from bench.stats import summary
from bench.suite import Context, Result

NAME = "throughput"
TARGET = 0.5


def run(ctx: Context) -> Result:
    res = Result(NAME)
    drained = [shared.drain(ctx, 1), shared.drain(ctx, 2)]
    one = drained[0]
    kafka = max(
        ceilings.kafka_consume_rate(ctx.services.kafka, one.due_topic, one.expected)
        for _ in range(3)
    )
    pg = shared.pg_ceiling(ctx)
    lower = min(kafka, pg)
    res.row("ceiling: bare kafka-python consumer", kafka, "records/s")
    res.row("ceiling: batched PostgreSQL apply, 500/txn", pg, "schedules/s")
    for r in drained:
        label = f"{r.workers} worker{'s' if r.workers > 1 else ''}"
        rate = r.throughput if r.completed else None
        note = "" if r.completed else _incomplete(r)
        res.row(f"end to end, {label}", rate, "schedules/s", note=note)
        res.at_least(
            f"ratio to the lower ceiling, {label}",
            None if rate is None else rate / lower,
            "x",
            TARGET,
            f">= {TARGET}",
            note=note,
        )
        res.details[f"{r.workers}w"] = _details(r)
        res.notes += r.notes
        if r.cpu_s:
            cores = os.cpu_count() or 1
            res.notes.append(f"{label}: " + cpu.describe(r.cpu_s, r.cpu_wall_s, r.expected, cores))
    res.details["ceilings"] = {"kafka_records_per_s": kafka, "pg_schedules_per_s": pg}
    res.notes.append(
        f"{one.expected} schedules, one per flag; 1 dispatcher; product defaults"
        " (6 due partitions, max_poll_records 500)."
    )
    if ctx.profile:
        _profile(ctx, res)
    return res


def _incomplete(r: Run) -> str:
    return f"INCOMPLETE: {len(r.applied)} of {r.expected} applied; statuses {r.statuses}"


def _details(r: Run) -> dict[str, object]:
    return {
        "schedules": r.expected,
        "completed": r.completed,
        "throughput_per_s": r.throughput,
        "seconds_to_last": r.span_s,
        "latency_ms": summary(r.latencies()),
        "statuses": r.statuses,
        "peak_rss_kb": r.peak_rss_kb,
        "cpu_s": r.cpu_s,
        "cpu_wall_s": r.cpu_wall_s,
    }


def _profile(ctx: Context, res: Result) -> None:
    """A separate 1-worker backlog run with py-spy attached to the worker."""
    r = runs.drain(ctx, "drain-1w-profiled", workers=1, n=ctx.sizes.drain_n, profile=True)
    res.details["profiled_run"] = _details(r)
    if r.profile is None or not r.profile.exists():
        res.notes.append("profile: py-spy produced no output (is py-spy installed?)")
        return
    results = ctx.raw_dir.parent
    shutil.copy(r.profile, results / "profile-worker.collapsed.txt")
    text = profiling.summarise(r.profile)
    header = (
        f"Worker profile during a 1-worker backlog of {r.expected} schedules"
        f" ({r.throughput:.0f} schedules/s under the profiler).\n"
        "Raw collapsed stacks: profile-worker.collapsed.txt (speedscope.app opens them).\n\n"
    )
    (results / "profile-worker.txt").write_text(header + text)
    res.notes.append("profile: bench/results/profile-worker.txt")
