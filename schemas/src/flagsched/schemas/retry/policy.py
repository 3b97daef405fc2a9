"""Retry policy and backoff maths: the one place flagsched computes a retry delay.

Convention shared by the worker and :mod:`flagsched.schemas.retry.preview`: attempts are 1-based,
retry ``n`` is attempt ``n + 1``, and the jitter seed is ``seed_for(schedule_id,
upcoming_attempt)`` -- the attempt being scheduled, not the one that failed.  So after
attempt ``k`` fails the delay is ``backoff_s(policy, k, seed_for(schedule_id, k + 1))``,
which is :func:`planned_delay_s`; call that rather than re-deriving it.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Self

from pydantic import BaseModel, Field, Strict, model_validator

#: Bounds every policy duration (30 days): keeps ``now + delay`` and hop counts small.
#: The runtime settings bound their backoff settings by the same constant, by name.
MAX_DELAY_S = 30 * 24 * 3600.0

_Retries = Annotated[int, Field(ge=0)]
_Positive = Annotated[float, Field(gt=0, le=MAX_DELAY_S, allow_inf_nan=False)]
_Multiplier = Annotated[float, Field(ge=1, allow_inf_nan=False)]
_Floor = Annotated[float, Field(ge=0, le=MAX_DELAY_S, allow_inf_nan=False)]


class Jitter(StrEnum):
    """How randomness is applied to the exponential delay."""

    NONE = "none"
    FULL = "full"
    EQUAL = "equal"
    DECORRELATED = "decorrelated"


class PolicyOverride(BaseModel, frozen=True, extra="forbid"):
    """A partial policy (per-schedule ``retry_policy`` jsonb, or an error-class adjustment):
    ``None`` or an absent key means "inherit"; unknown keys are rejected.

    Numbers must be JSON numbers (``"1"`` or ``true`` is refused) and ``max_retries`` an
    integer: the same shape migration 0005's ``flag_schedules_retry_policy_shape``
    CHECK enforces, so a policy the model accepts is a policy the database accepts.
    """

    max_retries: Annotated[_Retries, Strict()] | None = None
    base_s: Annotated[_Positive, Strict()] | None = None
    multiplier: Annotated[_Multiplier, Strict()] | None = None
    cap_s: Annotated[_Positive, Strict()] | None = None
    floor_s: Annotated[_Floor, Strict()] | None = None
    jitter: Jitter | None = None


class RetryPolicy(BaseModel, frozen=True):
    """A complete, validated retry policy; ``floor_s <= cap_s`` always holds."""

    max_retries: _Retries
    base_s: _Positive
    multiplier: _Multiplier
    cap_s: _Positive
    floor_s: _Floor
    jitter: Jitter

    @model_validator(mode="after")
    def _floor_not_above_cap(self) -> Self:
        if self.floor_s > self.cap_s:
            raise ValueError("floor_s must not be above cap_s")
        return self

    def merged(self, *overrides: PolicyOverride | None) -> RetryPolicy:
        """Apply ``overrides`` in order (later wins, ``None`` skipped) and re-validate:
        pydantic's ``ValidationError`` if the result is inconsistent (floor > cap)."""
        data = self.model_dump()
        for override in overrides:
            if override is not None:
                data.update(override.model_dump(exclude_none=True))
        return RetryPolicy.model_validate(data)


#: Built-in adjustments per error-class name.  Transient database conflicts clear within
#: milliseconds to seconds, so waiting minutes would only delay a change that will succeed.
CLASS_ADJUSTMENTS: Mapping[str, PolicyOverride] = MappingProxyType(
    {
        "lock_contention": PolicyOverride(base_s=0.5, multiplier=2.0, cap_s=30.0),
        "deadlock": PolicyOverride(base_s=0.2, cap_s=10.0),
        "serialization": PolicyOverride(base_s=0.2, cap_s=10.0),
    }
)


def policy_for(
    base: RetryPolicy, schedule_override: PolicyOverride | None, error_class: str | None
) -> RetryPolicy:
    """The effective policy for one failure.

    Precedence, lowest to highest: global defaults (``base``) < error-class adjustment
    (:data:`CLASS_ADJUSTMENTS`; unknown or ``None`` classes adjust nothing) < the
    schedule's own ``retry_policy`` override -- a user's explicit choice always wins.

    An adjustment never lowers the cap below the effective floor (an explicit minimum), so
    only a schedule override that conflicts with the floor raises ``ValidationError``;
    validate overrides when they are written, with ``base.merged(override)``.
    """
    adjustment = CLASS_ADJUSTMENTS.get(error_class) if error_class is not None else None
    if adjustment is not None and adjustment.cap_s is not None:
        floor = base.merged(schedule_override).floor_s
        if adjustment.cap_s < floor:
            adjustment = adjustment.model_copy(update={"cap_s": floor})
    return base.merged(adjustment, schedule_override)


def seed_for(schedule_id: int, attempt: int) -> int:
    """A 64-bit jitter seed, stable across processes and runs (unlike ``hash()``); pass
    the *upcoming* attempt number: ``seed_for(schedule_id, failed_attempt + 1)``."""
    digest = hashlib.blake2b(f"flagsched.retry:{schedule_id}:{attempt}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big")


def _raw_s(policy: RetryPolicy, retry_number: int) -> float:
    """``min(cap, base * multiplier**(retry_number - 1))`` without overflow for any n."""
    exponent = retry_number - 1
    log_raw = math.log(policy.base_s) + exponent * math.log(policy.multiplier)
    # Compare in log space so the power is only evaluated below the cap: 2.0**(10**9) raises.
    if log_raw >= math.log(policy.cap_s):
        return policy.cap_s
    try:  # the direct product is exact for ordinary policies (16.0, not 15.999...)
        return min(policy.cap_s, policy.base_s * policy.multiplier**exponent)
    except OverflowError:  # only with a sub-normal base: the power alone exceeds float range
        return min(policy.cap_s, math.exp(log_raw))


def backoff_s(policy: RetryPolicy, retry_number: int, seed: int) -> float:
    """Delay in seconds before retry ``retry_number`` (>= 1; retry 1 is the 2nd attempt).

    ``raw = min(cap, base * multiplier**(n-1))``, jittered with ``random.Random(seed)``:
    ``none`` raw; ``full`` uniform(0, raw); ``equal`` raw/2 + uniform(0, raw/2);
    ``decorrelated`` uniform(base, min(cap, 3 * prev)) where ``prev`` is the *un-jittered*
    raw delay of retry n-1 (``base`` for n == 1).  The classic variant feeds back the
    previous *jittered* sleep, needing state or an O(n) replay; the raw delay keeps it O(1)
    and a pure function of (policy, n, seed).  Finally clamped into ``[floor, cap]`` (the
    floor applies after jitter).  Deterministic; never inf, nan or OverflowError.
    """
    if retry_number < 1:
        raise ValueError(f"retry_number must be >= 1, got {retry_number}")
    raw = _raw_s(policy, retry_number)
    rng = random.Random(seed)
    match policy.jitter:
        case Jitter.NONE:
            delay = raw
        case Jitter.FULL:
            delay = rng.uniform(0.0, raw)
        case Jitter.EQUAL:
            delay = raw / 2 + rng.uniform(0.0, raw / 2)
        case Jitter.DECORRELATED:
            prev = policy.base_s if retry_number == 1 else _raw_s(policy, retry_number - 1)
            delay = rng.uniform(policy.base_s, min(policy.cap_s, 3 * prev))
    return max(policy.floor_s, min(policy.cap_s, delay))


def planned_delay_s(policy: RetryPolicy, schedule_id: int, failed_attempt: int) -> float:
    """``backoff_s(policy, k, seed_for(schedule_id, k + 1))`` for ``k = failed_attempt``;
    the worker and the preview both call this, so they cannot disagree."""
    return backoff_s(policy, failed_attempt, seed_for(schedule_id, failed_attempt + 1))


def next_attempt_at(policy: RetryPolicy, retry_number: int, seed: int, now: datetime) -> datetime:
    """``now + backoff_s(...)`` as a UTC-aware datetime; ``now`` must be tz-aware."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware (naive datetimes are ambiguous)")
    return now.astimezone(UTC) + timedelta(seconds=backoff_s(policy, retry_number, seed))


def is_exhausted(policy: RetryPolicy, attempt: int) -> bool:
    """Whether attempt ``attempt`` (1-based) was the last; 1 + max_retries are allowed."""
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    return attempt >= 1 + policy.max_retries
