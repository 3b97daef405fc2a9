"""What a worker's attempt results count for in the metrics.

The instruments live in :class:`flagsched.runtime.telemetry.metrics.Metrics`; which
of them a result moves is decided here, from what :class:`Outcome` says each outcome
means. Replayed results (an attempt already recorded, its side effects sent again)
only count in ``flagsched_records_total`` and ``flagsched_replays_total``, so a
rewound Kafka transaction never double-counts.
"""

from __future__ import annotations

import logging
from typing import assert_never

from flagsched.consumer.results import (
    Applied,
    AttemptResult,
    Cancelled,
    DeadLettered,
    Deferred,
    Dropped,
    Held,
    Hopped,
    Outcome,
    Paused,
    Poison,
    RetryScheduled,
    Superseded,
    brought,
    facts,
    is_replay,
)
from flagsched.runtime.telemetry.metrics import Metrics

log = logging.getLogger(__name__)


def prepare(metrics: Metrics) -> None:
    """Pre-create the outcome-labelled series at zero, so ``increase()`` sees the first."""
    for outcome in Outcome:
        if outcome.has_lifecycle_event:
            metrics.replays.labels(outcome.value)


def observe(metrics: Metrics, result: AttemptResult, tier: str) -> None:
    """Count one handled record (``tier``: the layout's label of its source topic).
    Never raises into the worker."""
    try:
        _observe(metrics, result, tier)
    except Exception:  # metrics must never break the worker
        log.exception("could not record metrics for %s", result)


def _observe(m: Metrics, result: AttemptResult, tier: str) -> None:
    m.records.labels(result.outcome.value, tier).inc()
    _count(m, result, tier)
    # Schedules the record's attempt applied first (due order): attempts without a record.
    for also in brought(result):
        _count(m, also, tier)


def _count(m: Metrics, result: AttemptResult, tier: str) -> None:
    o = result.outcome
    if is_replay(result):
        m.replays.labels(o.value).inc()
        return
    if not o.is_attempt:
        return
    seen = facts(result)
    kind = "first" if result.attempt <= 1 else "retry"
    m.attempts.labels(o.value, seen.error_class or "none", tier, kind).inc()
    if seen.lateness_ms is not None:
        late_s = max(0.0, seen.lateness_ms / 1000)
        if result.attempt <= 1:
            m.first_lateness.observe(late_s)
        else:
            m.retry_lateness.labels(tier).observe(late_s)
        if isinstance(result, Applied):
            m.apply_lateness.observe(late_s)
    match result:
        case Applied():
            m.applied.inc()
            m.attempts_per_applied.observe(result.attempt)
        case RetryScheduled():
            m.retries.labels(result.error_class).inc()
        case DeadLettered() | Poison():
            m.dead_letters.labels(result.reason.value).inc()
        case Superseded():
            m.superseded.inc()
        case Cancelled():
            m.cancelled.inc()
        case Paused() | Dropped() | Held() | Hopped() | Deferred():
            pass  # an infrastructure attempt counts only above; the others are no attempt
        case _:
            assert_never(result)
