"""3. Punctuality: lateness (start - due) of first attempts and of retries, under load.

A steady load with 10 % of the flags locked (a real ``FOR UPDATE`` held by a
helper connection) for the first third of it: their applies fail with
lock_contention and are retried through the delay tiers. Lateness per attempt
is flagsched's own record (``schedule_retry_attempts.lateness_ms``): attempt 1
includes the dispatch delay, attempt > 1 is a retry's lateness against its
``next_attempt_at``. Targets: never early (no negative lateness), p99 <= 250 ms
for first attempts and for retries.
"""

from __future__ import annotations

from collections import defaultdict

from bench import runs, shared
from bench.stats import percentile, summary
from bench.suite import Context, Result

NAME = "punctuality"
P99_MS = 250.0
FAIL_FRACTION = 0.1


def run(ctx: Context) -> Result:
    res = Result(NAME)
    s = ctx.sizes
    r = runs.steady(
        ctx,
        "punctuality",
        workers=shared.WORKERS,
        rate_per_s=s.steady_rate_per_s,
        duration_s=s.punctuality_s,
        flags=s.steady_flags,
        fail_fraction=FAIL_FRACTION,
        lock_hold_s=s.punctuality_s / 3,
        apply_lock_timeout_ms=shared.LOCK_TIMEOUT_MS,
    )
    first = [a.lateness_ms for a in r.attempts if a.attempt == 1]
    retries = [a.lateness_ms for a in r.attempts if a.attempt > 1]
    healthy_first = [
        a.lateness_ms for a in r.attempts if a.attempt == 1 and a.flag_key not in r.failing_keys
    ]
    every = first + retries
    res.at_least(
        "earliest attempt (min lateness)",
        min(every) if every else None,
        "ms",
        0.0,
        ">= 0 (never early)",
    )
    res.at_most(
        f"first attempts p99 ({len(first)})",
        percentile(first, 99),
        "ms",
        P99_MS,
        f"<= {P99_MS:.0f}",
    )
    res.row("first attempts p50", percentile(first, 50), "ms")
    res.row("first attempts p99, healthy flags only", percentile(healthy_first, 99), "ms")
    res.at_most(
        f"retries p99 ({len(retries)})",
        percentile(retries, 99),
        "ms",
        P99_MS,
        f"<= {P99_MS:.0f}",
    )
    res.row("retries p50", percentile(retries, 50), "ms")
    by_topic: dict[str, list[float]] = defaultdict(list)
    first_by_topic: dict[str, list[float]] = defaultdict(list)
    for a in r.attempts:
        tier = a.topic.rsplit(".", 1)[-1] if ".retry." in a.topic else "due"
        (by_topic if a.attempt > 1 else first_by_topic)[tier].append(a.lateness_ms)
    res.details = {
        "first_attempts_ms": summary(first),
        "first_attempts_healthy_flags_ms": summary(healthy_first),
        "retries_ms": summary(retries),
        "retries_by_source_topic_ms": {t: summary(v) for t, v in sorted(by_topic.items())},
        "first_attempts_by_source_topic_ms": {
            t: summary(v) for t, v in sorted(first_by_topic.items())
        },
        "statuses": r.statuses,
        "schedules": r.expected,
        "completed": r.completed,
    }
    res.notes += r.notes
    res.notes.append(
        f"{s.steady_rate_per_s:.0f} schedules/s for {s.punctuality_s:.0f}s on"
        f" {s.steady_flags} flags, {FAIL_FRACTION:.0%} of the flags locked for the first"
        f" {s.punctuality_s / 3:.0f}s; {shared.WORKERS} workers; {shared.LOCK_WAIT}; product"
        " retry defaults (tiers 1s/5s/30s/..., backoff 2 s x 2^n, full jitter, 5 retries;"
        " lock_contention from 0.5 s)."
    )
    if first_by_topic:
        res.notes.append(
            "first-attempt lateness p99 by the topic the attempt came from (pre-dispatched"
            " schedules arrive through the tiers): "
            + ", ".join(
                f"{t}: {percentile(v, 99):.0f} ms (n={len(v)})"
                for t, v in sorted(first_by_topic.items())
            )
        )
    if by_topic:
        res.notes.append(
            "retry lateness p99 by the tier the attempt came from: "
            + ", ".join(f"{t}: {percentile(v, 99):.0f} ms" for t, v in sorted(by_topic.items()))
        )
    return res
