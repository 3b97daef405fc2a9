"""Measurements more than one benchmark reads, each run at most once per suite run.

Every figure in a results table comes from the same suite run on the same
machine; when two benchmarks need the same measurement (the 1-worker backlog
for throughput and memory, the clean steady load for the MVP comparison and
the isolation baseline, the 100k burst for burst and priority) it is run once
and shared through :meth:`bench.suite.Context.once`.
"""

from __future__ import annotations

from bench import ceilings, runs
from bench.runs import Run
from bench.suite import Context

#: flagsched's configuration in the comparisons: one dispatcher, two workers.
WORKERS = 2
#: How long a poll waits for flags locked elsewhere, in the loads with failures: the
#: product default, 0 (not at all: lock_contention at once, retried through the tiers).
LOCK_TIMEOUT_MS = 0
LOCK_WAIT = (
    f"apply lock timeout {LOCK_TIMEOUT_MS} ms"
    if LOCK_TIMEOUT_MS
    else "flags locked elsewhere not waited for (product default)"
)
#: The MVP's cron interval (the seed: 60 s) and its backoff unit (the seed: minutes).
MVP_INTERVAL_S = 5.0
MVP_BACKOFF_UNIT_S = 1.0
#: procrastinate: as many worker processes as flagsched has workers, 10 jobs at a time each.
PROCRASTINATE_WORKERS = 2
PROCRASTINATE_CONCURRENCY = 10


def drain(ctx: Context, workers: int) -> Run:
    """A backlog of ``drain_n`` schedules, already due when inserted."""
    n = ctx.sizes.drain_n
    return ctx.once(  # type: ignore[no-any-return]
        ("drain", workers, n),
        lambda: runs.drain(ctx, f"drain-{workers}w", workers=workers, n=n),
    )


def steady(ctx: Context, fail_fraction: float) -> Run:
    """The steady load with ``fail_fraction`` of the flags locked for half of it."""
    s = ctx.sizes
    return ctx.once(  # type: ignore[no-any-return]
        ("steady", fail_fraction),
        lambda: runs.steady(
            ctx,
            f"steady-fail{round(fail_fraction * 100)}",
            workers=WORKERS,
            rate_per_s=s.steady_rate_per_s,
            duration_s=s.steady_s,
            flags=s.steady_flags,
            fail_fraction=fail_fraction,
            lock_hold_s=s.steady_s / 2,
            apply_lock_timeout_ms=LOCK_TIMEOUT_MS,
        ),
    )


def burst(ctx: Context) -> Run:
    """``burst_n`` schedules due at one instant, inserted ahead of it, with a trickle of
    critical schedules (each due when inserted) from that instant until the last is applied.
    """
    n = ctx.sizes.burst_n
    return ctx.once(  # type: ignore[no-any-return]
        ("burst", n),
        lambda: runs.drain(
            ctx,
            "burst",
            workers=WORKERS,
            n=n,
            announce_s=5 + n / 10_000,
            critical_every_s=ctx.sizes.critical_every_s,
        ),
    )


def pg_ceiling(ctx: Context) -> float:
    n = ctx.sizes.drain_n
    return ctx.once(  # type: ignore[no-any-return]
        ("pg-ceiling", n), lambda: ceilings.pg_batched_apply_rate(ctx, n)
    )
