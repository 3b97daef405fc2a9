"""Retry policy and backoff maths: the one place flagsched computes a retry delay.

Convention shared by the worker and :mod:`flagsched.schemas.retry.preview`: attempts are 1-based,
retry ``n`` is attempt ``n + 1``, and the jitter seed is ``seed_for(schedule_id,
upcoming_attempt)`` -- the attempt being scheduled, not the one that failed.  So after
attempt ``k`` fails the delay is ``backoff_s(policy, k, seed_for(schedule_id, k + 1))``,
which is :func:`planned_delay_s`; call that rather than re-deriving it.

Two bounds end the retries (:func:`is_exhausted`): the count (``max_retries``) and, when
set, the time budget ``max_retry_duration_s``: a failed attempt is retried only while the
schedule's *first* failure is younger than the budget **and** retries remain.

``decorrelated`` jitter is the AWS Architecture Blog's ("Exponential Backoff And
Jitter"): ``sleep = min(cap, uniform(base, 3 * previous_sleep))``, starting from
``previous_sleep = base``.  The previous sleep is not stored anywhere: it is derived by
replaying the schedule's seeded chain (:func:`planned_delays`), so the worker stays
stateless and the preview still equals what the worker will do.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from itertools import islice
from types import MappingProxyType
from typing import Annotated, Self

from pydantic import BaseModel, Field, Strict, StrictInt, model_validator

#: Bounds every policy duration (30 days): keeps ``now + delay`` and hop counts small.
#: The runtime settings bound their backoff settings by the same constant, by name.
MAX_DELAY_S = 30 * 24 * 3600.0

#: Bounds ``max_retries``: the decorrelated chain is replayed per failure (O(n)).
MAX_RETRIES = 10_000

# StrictInt: a retry count of 2.5, "3" or true is a mistake, not something to coerce.
_Retries = Annotated[StrictInt, Field(ge=0, le=MAX_RETRIES)]
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
    max_retry_duration_s: Annotated[_Positive, Strict()] | None = None

    @model_validator(mode="after")
    def _consistent_in_itself(self) -> Self:
        if self.cap_s is not None:
            for name in ("base_s", "floor_s"):
                value = getattr(self, name)
                if value is not None and value > self.cap_s:
                    raise ValueError(f"{name} must not be above cap_s")
        return self


class RetryPolicy(BaseModel, frozen=True):
    """A complete, validated retry policy; ``floor_s <= cap_s`` and ``base_s <= cap_s``
    always hold.  ``max_retry_duration_s`` ``None`` means no time budget (count only)."""

    max_retries: _Retries
    base_s: _Positive
    multiplier: _Multiplier
    cap_s: _Positive
    floor_s: _Floor
    jitter: Jitter
    max_retry_duration_s: Annotated[_Positive, Strict()] | None = None

    @model_validator(mode="after")
    def _bounds_below_cap(self) -> Self:
        if self.floor_s > self.cap_s:
            raise ValueError("floor_s must not be above cap_s")
        if self.base_s > self.cap_s:
            raise ValueError("base_s must not be above cap_s")
        return self

    def merged(self, *overrides: PolicyOverride | None) -> RetryPolicy:
        """Apply ``overrides`` in order (later wins, ``None`` skipped) and re-validate:
        pydantic's ``ValidationError`` if the result is inconsistent (floor or base above
        cap): the check for an override being written."""
        data = self.model_dump()
        for override in overrides:
            if override is not None:
                data.update(override.model_dump(exclude_none=True))
        return RetryPolicy.model_validate(data)


#: Built-in adjustments per error-class name.  Transient database conflicts clear within
#: milliseconds to seconds, so waiting minutes would only delay a change that will succeed.
#: A row lock, though, can be held for a minute (a long migration, an operator's open
#: transaction): 5 full-jitter retries from 0.5 s were measured spending all of them in
#: 2.7 s.  So lock contention retries for a time budget of 5 minutes (the count, 100, is
#: only a backstop), with equal jitter: every delay is at least half the raw one, so the
#: count cannot run out first (the 100 smallest delays add up to over 7 minutes).
CLASS_ADJUSTMENTS: Mapping[str, PolicyOverride] = MappingProxyType(
    {
        "lock_contention": PolicyOverride(
            base_s=0.5,
            multiplier=2.0,
            cap_s=10.0,
            jitter=Jitter.EQUAL,
            max_retries=100,
            max_retry_duration_s=300.0,
        ),
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

    An adjustment never lowers the cap below the effective floor (an explicit minimum).
    Across layers the cap wins over a larger base (``min(cap, ...)`` always did): a
    schedule's ``base_s`` of 20 under the deadlock cap of 10 waits 10 s. Only a layer
    that is inconsistent in itself (``base_s`` or ``floor_s`` above its own ``cap_s``)
    is rejected, when it is written (:class:`PolicyOverride` validates itself), and a
    schedule floor above the final cap raises ``ValidationError`` here; validate
    overrides when they are written, with ``base.merged(override)``.
    """
    adjustment = CLASS_ADJUSTMENTS.get(error_class) if error_class is not None else None
    if adjustment is not None and adjustment.cap_s is not None:
        own = schedule_override.floor_s if schedule_override is not None else None
        floor = base.floor_s if own is None else own
        if adjustment.cap_s < floor:
            adjustment = adjustment.model_copy(update={"cap_s": floor})
    data = base.model_dump()
    for layer in (adjustment, schedule_override):
        if layer is not None:
            data.update(layer.model_dump(exclude_none=True))
    data["base_s"] = min(data["base_s"], data["cap_s"])
    return RetryPolicy.model_validate(data)


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


def _check_number(name: str, value: object) -> int:
    # bool is an int subclass, and 2.0 would silently truncate in a range(): both are bugs.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def backoff_s(
    policy: RetryPolicy, retry_number: int, seed: int, previous_s: float | None = None
) -> float:
    """Delay in seconds before retry ``retry_number`` (an int >= 1; retry 1 is the 2nd
    attempt).

    ``raw = min(cap, base * multiplier**(n-1))``, jittered with ``random.Random(seed)``:
    ``none`` raw; ``full`` uniform(0, raw); ``equal`` raw/2 + uniform(0, raw/2);
    ``decorrelated`` (AWS) ``min(cap, uniform(base, 3 * previous_s))`` where
    ``previous_s`` is the sleep before the previous retry (``base`` when ``None``: right
    for retry 1; for later retries :func:`planned_delays` supplies it from the chain).
    Finally clamped into ``[floor, cap]`` (the floor applies after jitter).
    Deterministic; never inf, nan or OverflowError.
    """
    _check_number("retry_number", retry_number)
    rng = random.Random(seed)
    if policy.jitter is Jitter.DECORRELATED:
        prev = policy.base_s if previous_s is None else previous_s
        delay = min(policy.cap_s, rng.uniform(policy.base_s, max(policy.base_s, 3 * prev)))
        return max(policy.floor_s, min(policy.cap_s, delay))
    raw = _raw_s(policy, retry_number)
    match policy.jitter:
        case Jitter.NONE:
            delay = raw
        case Jitter.FULL:
            delay = rng.uniform(0.0, raw)
        case Jitter.EQUAL:
            delay = raw / 2 + rng.uniform(0.0, raw / 2)
    return max(policy.floor_s, min(policy.cap_s, delay))


def planned_delays(policy: RetryPolicy, schedule_id: int) -> Iterator[float]:
    """The delays after attempts 1, 2, 3, ... of ``schedule_id`` fail, endlessly.

    Element ``k - 1`` is ``backoff_s(policy, k, seed_for(schedule_id, k + 1), previous)``
    with ``previous`` the element before it: the decorrelated chain is replayed from its
    seeds, so no sleep has to be stored.  (The chain is the *current* policy's: after a
    change of error class the replay uses the new class's policy for every step.)
    """
    previous: float | None = None
    k = 1
    while True:
        previous = backoff_s(policy, k, seed_for(schedule_id, k + 1), previous)
        yield previous
        k += 1


def planned_delay_s(policy: RetryPolicy, schedule_id: int, failed_attempt: int) -> float:
    """The delay after attempt ``failed_attempt`` of ``schedule_id`` fails: element
    ``failed_attempt - 1`` of :func:`planned_delays`.  The worker and the preview both
    take their delays from that chain, so they cannot disagree.  O(1) except for
    ``decorrelated`` jitter, which replays the chain (O(failed_attempt))."""
    _check_number("failed_attempt", failed_attempt)
    if policy.jitter is not Jitter.DECORRELATED:
        return backoff_s(policy, failed_attempt, seed_for(schedule_id, failed_attempt + 1))
    return next(islice(planned_delays(policy, schedule_id), failed_attempt - 1, None))


def _aware(name: str, at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (naive datetimes are ambiguous)")
    return at.astimezone(UTC)


def next_attempt_at(policy: RetryPolicy, retry_number: int, seed: int, now: datetime) -> datetime:
    """``now + backoff_s(...)`` as a UTC-aware datetime; ``now`` must be tz-aware."""
    return _aware("now", now) + timedelta(seconds=backoff_s(policy, retry_number, seed))


def planned_attempt_at(
    policy: RetryPolicy, schedule_id: int, failed_attempt: int, now: datetime
) -> datetime:
    """When the attempt after ``failed_attempt`` runs if it failed at ``now`` (UTC)."""
    delay = planned_delay_s(policy, schedule_id, failed_attempt)
    return _aware("now", now) + timedelta(seconds=delay)


def is_exhausted(
    policy: RetryPolicy,
    attempt: int,
    *,
    first_failed_at: datetime | None = None,
    now: datetime | None = None,
) -> bool:
    """Whether failed attempt ``attempt`` (an int >= 1) was the last.

    Count: 1 + max_retries attempts are allowed.  Time: with ``max_retry_duration_s``
    set, also exhausted once the first failure (``first_failed_at``) is at least that old
    at ``now``; both must be tz-aware and are ignored without a budget.
    """
    _check_number("attempt", attempt)
    if attempt >= 1 + policy.max_retries:
        return True
    if policy.max_retry_duration_s is None or first_failed_at is None or now is None:
        return False
    age_s = (_aware("now", now) - _aware("first_failed_at", first_failed_at)).total_seconds()
    return age_s >= policy.max_retry_duration_s
