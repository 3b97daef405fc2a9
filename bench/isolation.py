"""6. Isolation: p99 latency of healthy schedules while 30 % of schedules fail and retry.

Two runs of the same steady load: one with no failures, one with 30 % of the
flags locked (real ``FOR UPDATE`` locks) for the first half of it. Latency is
applied (commit) - due of the schedules on healthy flags. Target: the p99 with
failures <= 1.2 x the p99 without.
"""

from __future__ import annotations

from bench import shared
from bench.runs import Run
from bench.stats import percentile, summary
from bench.suite import Context, Result

NAME = "isolation"
FAIL_FRACTION = 0.3
TARGET = 1.2


def run(ctx: Context) -> Result:
    res = Result(NAME)
    clean = shared.steady(ctx, 0.0)
    failing = shared.steady(ctx, FAIL_FRACTION)
    base = clean.latencies()
    healthy = failing.latencies(healthy_only=True)
    p_base, p_healthy = percentile(base, 99), percentile(healthy, 99)
    note_clean, note_failing = _incomplete(clean), _incomplete(failing)
    res.row("healthy p99, 0 % failing", p_base, "ms", note=note_clean)
    res.row("healthy p99, 30 % failing", p_healthy, "ms", note=note_failing)
    ratio = None if not p_base or p_healthy is None else p_healthy / p_base
    res.at_most(
        "ratio (30 % failing / 0 % failing)",
        ratio,
        "x",
        TARGET,
        f"<= {TARGET}",
        note="from incomplete runs" if note_clean or note_failing else "",
    )
    retried = sum(1 for a in failing.attempts if a.attempt > 1)
    res.details = {
        "clean_ms": summary(base),
        "healthy_with_failures_ms": summary(healthy),
        "failing_flags_ms": summary(
            [a.latency_ms for a in failing.applied if a.flag_key in failing.failing_keys]
        ),
        "retry_attempts": retried,
        "statuses_with_failures": failing.statuses,
    }
    res.notes += clean.notes + failing.notes
    s = ctx.sizes
    res.notes.append(
        f"{s.steady_rate_per_s:.0f} schedules/s for {s.steady_s:.0f}s on {s.steady_flags} flags,"
        f" {shared.WORKERS} workers; failing flags locked for {s.steady_s / 2:.0f}s;"
        f" {shared.LOCK_WAIT}; {retried} retry attempts."
    )
    return res


def _incomplete(r: Run) -> str:
    if r.completed:
        return ""
    return f"INCOMPLETE: {len(r.applied)} of {r.expected} applied; {r.statuses}"
