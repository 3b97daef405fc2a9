"""5. Priority: latency of critical schedules while a large normal backlog is queued.

Shares the burst run (burst.py): from the burst instant until the last normal
schedule is applied, a critical schedule (each on its own flag, due when
inserted) arrives every 0.25 s; the dispatcher publishes them to the priority
topic. Latency = applied (commit) - due. Target: p99 <= 1 s.
"""

from __future__ import annotations

from bench import shared
from bench.stats import percentile, summary
from bench.suite import Context, Result

NAME = "priority"
P99_MS = 1000.0


def run(ctx: Context) -> Result:
    res = Result(NAME)
    r = shared.burst(ctx)
    crit = r.latencies("critical")
    normal = r.latencies("normal")
    stuck = "" if r.completed else f"normal backlog INCOMPLETE ({len(normal)} of {r.expected})"
    res.at_most(
        f"critical p99 ({len(crit)} critical)",
        percentile(crit, 99),
        "ms",
        P99_MS,
        f"<= {P99_MS:.0f}",
        note=stuck,
    )
    res.row("critical p50", percentile(crit, 50), "ms")
    res.row(f"normal backlog p50 ({len(normal)} normal)", percentile(normal, 50), "ms")
    res.details = {"critical_ms": summary(crit), "normal_ms": summary(normal)}
    res.notes.append(
        f"{len(normal)} normal schedules due at one instant, {shared.WORKERS} workers;"
        f" a critical one every {ctx.sizes.critical_every_s}s while they drain."
    )
    return res
