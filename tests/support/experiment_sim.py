"""A simulated workload for backoff experiments: every schedule first meets a row lock
held for a random time and is retried by its arm's policy, exactly as the worker would
(the worker's own delay chain and exhaustion check), until it applies or is exhausted."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from flagsched.admin.experiments import Outcome
from flagsched.schemas.retry import is_exhausted, planned_delays
from flagsched.schemas.retry.experiments import Experiment, assign
from flagsched.schemas.retry.policy import RetryPolicy

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def simulate(
    experiment: Experiment,
    defaults: RetryPolicy,
    *,
    schedules: int,
    seed: int,
    max_hold_s: float,
) -> list[Outcome]:
    """One run: schedule ids ``seed * 10**6 + 1 ..``, arms assigned as the trigger does,
    lock hold times uniform in ``[0, max_hold_s)`` from ``seed``."""
    rng = random.Random(seed)
    out = []
    for sid in range(seed * 10**6 + 1, seed * 10**6 + 1 + schedules):
        arm = assign(experiment, sid)
        policy = defaults.merged(arm.policy)
        held_until = T0 + timedelta(seconds=rng.uniform(0, max_hold_s))
        out.append(_run(arm.name, policy, sid, (held_until - T0).total_seconds()))
    return out


def _run(arm: str, policy: RetryPolicy, sid: int, hold_s: float) -> Outcome:
    # What preview() plans, without its tier paths (exact rationals: slow in a loop of
    # thousands): attempt 1 fails at 0; each next attempt runs after the chain's delay.
    at, failed = 0.0, 1
    delays = planned_delays(policy, sid)
    while not is_exhausted(policy, failed, first_failed_at=T0, now=T0 + timedelta(seconds=at)):
        at += next(delays)
        failed += 1
        if at >= hold_s:
            return Outcome(arm, "applied", failed, at)
    return Outcome(arm, "dead", failed, None)
