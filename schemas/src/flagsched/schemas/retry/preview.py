"""Dry-run preview of a schedule's remaining retries, computed exactly as the worker will."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import islice

from pydantic import AwareDatetime, BaseModel, field_validator

from flagsched.schemas.retry.policy import RetryPolicy, is_exhausted, planned_delays
from flagsched.schemas.retry.tiers import hop_path

#: At most this many attempts are listed (``max_retries`` is otherwise unbounded here).
MAX_PREVIEW_ATTEMPTS = 1000


class PlannedAttempt(BaseModel, frozen=True):
    """One upcoming attempt: its number, when it runs (UTC), the delay before it and the
    delay tiers its record hops through."""

    attempt: int
    at: AwareDatetime
    delay_s: float
    tiers: list[float]

    @field_validator("at")
    @classmethod
    def _in_utc(cls, v: datetime) -> datetime:
        return v.astimezone(UTC)


def preview(
    policy: RetryPolicy,
    schedule_id: int,
    first_failure_at: datetime,
    ladder: Sequence[float],
    attempts_failed: int = 0,
    *,
    retrying_since: datetime | None = None,
) -> list[PlannedAttempt]:
    """Every remaining attempt up to exhaustion, assuming each one fails as soon as it runs.

    ``attempts_failed`` attempts had failed before the failure at ``first_failure_at``,
    which is therefore attempt ``attempts_failed + 1`` (the very first attempt by default).
    After attempt ``k`` fails at ``t``, attempt ``k + 1`` is planned at ``t`` plus element
    ``k - 1`` of :func:`~flagsched.schemas.retry.policy.planned_delays`, the chain the
    worker takes its delays from, and the plan stops where
    :func:`~flagsched.schemas.retry.policy.is_exhausted` says the worker stops: by count,
    or once the schedule's first failure (``retrying_since``, by default
    ``first_failure_at``) is ``max_retry_duration_s`` old.

    Times must be tz-aware.  The list is truncated to :data:`MAX_PREVIEW_ATTEMPTS` entries.
    """
    if first_failure_at.tzinfo is None or first_failure_at.utcoffset() is None:
        raise ValueError("first_failure_at must be timezone-aware")
    if isinstance(attempts_failed, bool) or not isinstance(attempts_failed, int):
        raise TypeError(f"attempts_failed must be an integer, got {attempts_failed!r}")
    if attempts_failed < 0:
        raise ValueError(f"attempts_failed must be >= 0, got {attempts_failed}")
    since = first_failure_at if retrying_since is None else retrying_since
    planned: list[PlannedAttempt] = []
    at = first_failure_at.astimezone(UTC)
    failed = attempts_failed + 1
    delays = islice(planned_delays(policy, schedule_id), attempts_failed, None)
    while len(planned) < MAX_PREVIEW_ATTEMPTS and not is_exhausted(
        policy, failed, first_failed_at=since, now=at
    ):
        delay = next(delays)
        at += timedelta(seconds=delay)
        failed += 1
        planned.append(
            PlannedAttempt(attempt=failed, at=at, delay_s=delay, tiers=hop_path(ladder, delay))
        )
    return planned
