"""2. Against the MVP design (bench/mvp_baseline.py) and procrastinate.

Throughput: the same backlog (schedules already due when inserted, one per
flag) drained by flagsched (1 dispatcher, 2 workers), by the MVP loop (one
process waking every 5 s; the seed wakes every 60 s) and by procrastinate
(2 worker processes, 10 concurrent jobs each, its default polling). Throughput
= schedules / (last applied - insert), so the MVP's wait for its next tick
counts, as it would in production. Target: flagsched >= 10 x the MVP.

Latency after due: the same steady load (schedules due at a steady rate,
created ahead of time) through each of the three; applied (commit) - due. For
procrastinate that is its scheduled-job lateness (reference: p99 ~ 5 s).
"""

from __future__ import annotations

import importlib.util

from bench import others, shared
from bench.runs import Run
from bench.stats import percentile, summary
from bench.suite import Context, Result

NAME = "baselines"
TARGET = 10.0


def run(ctx: Context) -> Result:
    res = Result(NAME)
    s = ctx.sizes
    n = s.drain_n
    mvp_knobs = {"interval_s": shared.MVP_INTERVAL_S, "backoff_unit_s": shared.MVP_BACKOFF_UNIT_S}
    pc_knobs = {
        "workers": shared.PROCRASTINATE_WORKERS,
        "concurrency": shared.PROCRASTINATE_CONCURRENCY,
    }
    has_pc = importlib.util.find_spec("procrastinate") is not None
    drains: dict[str, Run | None] = {
        "flagsched": shared.drain(ctx, shared.WORKERS),
        "MVP": others.mvp_drain(ctx, "mvp-drain", n, **mvp_knobs),
        "procrastinate": (
            others.procrastinate_drain(ctx, "procrastinate-drain", n, **pc_knobs)
            if has_pc
            else None
        ),
    }
    rates = {k: (r.throughput if r and r.completed else None) for k, r in drains.items()}
    for name, r in drains.items():
        res.row(f"throughput: {name}", rates[name], "schedules/s", note=_note(r))
    fs, mvp, pc = rates["flagsched"], rates["MVP"], rates["procrastinate"]
    res.at_least(
        "throughput: flagsched / MVP",
        fs / mvp if fs and mvp else None,
        "x",
        TARGET,
        f">= {TARGET:.0f}",
    )
    if fs and pc:
        res.row("throughput: flagsched / procrastinate", fs / pc, "x")

    steady: dict[str, Run | None] = {
        "flagsched": shared.steady(ctx, 0.0),
        "MVP": others.mvp_steady(
            ctx,
            "mvp-steady",
            s.steady_rate_per_s,
            s.steady_s,
            s.steady_flags,
            **mvp_knobs,
        ),
        "procrastinate": (
            others.procrastinate_steady(
                ctx,
                "procrastinate-steady",
                s.steady_rate_per_s,
                s.steady_s,
                s.steady_flags,
                **pc_knobs,
            )
            if has_pc
            else None
        ),
    }
    for name, r in steady.items():
        lat = r.latencies() if r else []
        res.row(f"latency after due p50: {name}", percentile(lat, 50), "ms", note=_note(r))
        res.row(f"latency after due p99: {name}", percentile(lat, 99), "ms", note=_note(r))
        if r:
            res.details[f"steady_{name}"] = {"latency_ms": summary(lat), "statuses": r.statuses}
            res.notes += r.notes
    for name, r in drains.items():
        if r:
            res.details[f"drain_{name}"] = {
                "throughput_per_s": r.throughput,
                "processing_rate_per_s": _processing_rate(r),
                "latency_ms": summary(r.latencies()),
                "statuses": r.statuses,
                "peak_rss_kb": r.peak_rss_kb,
            }
            res.notes += r.notes
    m = drains["MVP"]
    if m is not None and (rate := _processing_rate(m)):
        res.notes.append(
            f"MVP processing rate once awake (first to last applied): {rate:.0f} schedules/s."
        )
    res.notes.append(
        f"backlog {n} schedules; steady load {s.steady_rate_per_s:.0f}/s for {s.steady_s:.0f}s"
        f" on {s.steady_flags} flags. MVP: one process, wakes every {shared.MVP_INTERVAL_S:.0f}s"
        f" (seed: 60s), backoff 2^n x {shared.MVP_BACKOFF_UNIT_S:.0f}s + U(0,"
        f" {shared.MVP_BACKOFF_UNIT_S / 2:.1f}s) (seed: 2^n minutes + U(0, 30 s))."
        + (
            f" procrastinate {_pc_version()}: {shared.PROCRASTINATE_WORKERS} worker processes x"
            f" {shared.PROCRASTINATE_CONCURRENCY} concurrent jobs, default polling interval (5 s)."
            if has_pc
            else " procrastinate is not installed (pip install -e '.[bench]'): not measured."
        )
    )
    return res


def _note(r: Run | None) -> str:
    if r is None:
        return "not installed"
    return "" if r.completed else f"INCOMPLETE: {len(r.applied)} of {r.expected} applied"


def _processing_rate(r: Run) -> float | None:
    times = sorted(a.applied for a in r.applied)
    if len(times) < 2:
        return None
    span = (times[-1] - times[0]).total_seconds()
    return (len(times) - 1) / span if span > 0 else None


def _pc_version() -> str:
    import procrastinate

    return str(procrastinate.__version__)
