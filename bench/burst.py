"""4. Burst: N schedules due at the same instant, against the MVP rebuild.

flagsched: 100,000 schedules (one per flag) inserted ahead of their common due
instant T, with the dispatcher and 2 workers running (the pre-dispatch window
lets the dispatcher publish them before T). Measured: T until the last is
applied, and the p99 of applied - T.

The MVP applies one schedule per transaction; it gets a smaller N (10,000 in
the full run) and its figures are extrapolated to flagsched's N linearly:
time to last = wait for its first tick + N / its processing rate; the p99 is
that at 99 % of N. Both are marked as extrapolated.
"""

from __future__ import annotations

from bench import others, shared
from bench.stats import percentile, summary
from bench.suite import Context, Result

NAME = "burst"


def run(ctx: Context) -> Result:
    res = Result(NAME)
    r = shared.burst(ctx)
    normal = [a for a in r.applied if a.priority == "normal"]
    lat = [a.latency_ms for a in normal]
    n = r.expected
    note = "" if r.completed else f"INCOMPLETE: {len(normal)} of {n} applied; {r.statuses}"
    last_s = max(lat) / 1000 if lat and r.completed else None
    res.row(f"flagsched: due instant -> last applied ({n})", last_s, "s", note=note)
    res.row("flagsched: p99 after due", percentile(lat, 99), "ms", note=note)
    res.row("flagsched: p50 after due", percentile(lat, 50), "ms", note=note)

    m = others.mvp_drain(
        ctx,
        "mvp-burst",
        ctx.sizes.mvp_burst_n,
        interval_s=shared.MVP_INTERVAL_S,
        backoff_unit_s=shared.MVP_BACKOFF_UNIT_S,
        lead_s=5.0,
    )
    mlat = sorted(m.latencies())
    mvp_last = mvp_p99 = None
    if len(mlat) > 1 and m.completed:
        first_s, span_s = mlat[0] / 1000, (mlat[-1] - mlat[0]) / 1000
        rate = (len(mlat) - 1) / span_s
        mvp_last = first_s + n / rate
        mvp_p99 = (first_s + 0.99 * n / rate) * 1000
        res.details["mvp"] = {
            "n": len(mlat),
            "measured_ms": summary(mlat),
            "processing_rate_per_s": rate,
            "first_tick_wait_s": first_s,
        }
    xnote = f"extrapolated from {len(mlat)} schedules"
    res.row(f"MVP: due instant -> last applied ({n})", mvp_last, "s", note=xnote)
    res.row("MVP: p99 after due", mvp_p99, "ms", note=xnote)
    if last_s and mvp_last:
        res.row("MVP / flagsched, time to last applied", mvp_last / last_s, "x")
    res.details["flagsched"] = {"latency_ms": summary(lat), "statuses": r.statuses}
    res.notes += r.notes + m.notes
    res.notes.append(
        f"flagsched: {shared.WORKERS} workers, 1 dispatcher, schedules inserted"
        f" {5 + n / 10_000:.0f}s before T. MVP: one loop process waking every"
        f" {shared.MVP_INTERVAL_S:.0f}s (the seed: 60s)."
    )
    return res
