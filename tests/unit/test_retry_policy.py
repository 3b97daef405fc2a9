"""Properties of the retry maths: bounds, determinism, overflow, time zones, precedence."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from flagsched.runtime.settings import Settings
from flagsched.schemas.retry import (
    CLASS_ADJUSTMENTS,
    MAX_DELAY_S,
    MAX_PREVIEW_ATTEMPTS,
    Jitter,
    PolicyOverride,
    RetryPolicy,
    backoff_s,
    hop_path,
    is_exhausted,
    next_attempt_at,
    planned_delay_s,
    policy_for,
    preview,
    seed_for,
)

LADDER = (1.0, 5.0, 30.0, 120.0, 600.0, 3600.0)
HUGE_N = (10, 1000, 10**6, 10**9)
ANY_JITTER = st.sampled_from(Jitter)


def make(jitter: Jitter = Jitter.NONE, **kw: float) -> RetryPolicy:
    fields: dict[str, float] = dict(max_retries=5, base_s=2.0, multiplier=2.0, cap_s=3600.0)
    fields.update(kw)
    return RetryPolicy(floor_s=fields.pop("floor_s", 0.0), jitter=jitter, **fields)


@st.composite
def policies(draw: st.DrawFn, jitters: st.SearchStrategy[Jitter] = ANY_JITTER) -> RetryPolicy:
    cap = draw(st.floats(min_value=1e-3, max_value=MAX_DELAY_S))
    return RetryPolicy(
        max_retries=draw(st.integers(0, 50)),
        # Sub-normal bases included on purpose: they exercise the overflow fallback.
        base_s=draw(st.floats(min_value=0.0, max_value=MAX_DELAY_S, exclude_min=True)),
        multiplier=draw(st.floats(min_value=1.0, max_value=1e6)),
        cap_s=cap,
        floor_s=draw(st.floats(min_value=0.0, max_value=cap)),
        jitter=draw(jitters),
    )


retry_numbers = st.integers(1, 10**9) | st.sampled_from(HUGE_N)
seeds = st.integers(0, 2**64 - 1)


@given(policies(), retry_numbers, seeds)
def test_backoff_is_finite_within_floor_and_cap_and_deterministic(
    policy: RetryPolicy, n: int, seed: int
) -> None:
    delay = backoff_s(policy, n, seed)
    assert math.isfinite(delay)
    assert policy.floor_s <= delay <= policy.cap_s
    assert backoff_s(policy, n, seed) == delay


@pytest.mark.parametrize("jitter", list(Jitter))
@pytest.mark.parametrize("n", HUGE_N)
def test_huge_retry_numbers_neither_overflow_nor_raise(jitter: Jitter, n: int) -> None:
    for multiplier in (1.0, 2.0, 1e300):
        delay = backoff_s(make(jitter, multiplier=multiplier), n, seed=7)
        assert 0.0 <= delay <= 3600.0
    assert backoff_s(make(Jitter.NONE), n, seed=7) == (1024.0 if n == 10 else 3600.0)


def test_no_jitter_is_exact_exponential_until_the_cap() -> None:
    policy = make(Jitter.NONE)
    assert [backoff_s(policy, n, 0) for n in range(1, 13)] == [
        *(2.0 * 2 ** (n - 1) for n in range(1, 12)),
        3600.0,
    ]


def test_floor_applies_after_jitter() -> None:
    policy = make(Jitter.FULL, floor_s=3.0, base_s=10.0, multiplier=1.0, cap_s=10.0)
    delays = [backoff_s(policy, 1, s) for s in range(500)]
    assert min(delays) == 3.0  # full jitter draws below the floor ~30% of the time
    assert max(delays) <= 10.0


@given(policies(st.just(Jitter.EQUAL)), st.integers(1, 60), seeds)
def test_equal_jitter_stays_in_upper_half(policy: RetryPolicy, n: int, seed: int) -> None:
    raw = backoff_s(policy.merged(PolicyOverride(jitter=Jitter.NONE, floor_s=0.0)), n, seed)
    delay = backoff_s(policy.merged(PolicyOverride(floor_s=0.0)), n, seed)
    assert raw / 2 <= delay <= raw


@given(policies(st.just(Jitter.DECORRELATED)), st.integers(1, 60), seeds)
def test_decorrelated_is_between_base_and_three_times_previous_raw(
    policy: RetryPolicy, n: int, seed: int
) -> None:
    p = policy.merged(PolicyOverride(floor_s=0.0, cap_s=max(policy.cap_s, policy.base_s)))
    prev = p.base_s if n == 1 else backoff_s(p.merged(PolicyOverride(jitter=Jitter.NONE)), n - 1, 0)
    delay = backoff_s(p, n, seed)
    assert p.base_s <= delay <= min(p.cap_s, 3 * prev) * (1 + 1e-12)


def test_full_jitter_is_uniform_chi_square() -> None:
    # A fixed seed set makes this deterministic; 27.877 is the chi-square critical value
    # for 9 degrees of freedom at alpha = 0.001.
    policy = make(Jitter.FULL, base_s=100.0, multiplier=1.0, cap_s=100.0)
    bins = [0] * 10
    for schedule_id in range(2000):
        bins[min(9, int(planned_delay_s(policy, schedule_id, 1) // 10))] += 1
    chi2 = sum((observed - 200) ** 2 / 200 for observed in bins)
    assert chi2 < 27.877, bins


def test_retry_number_must_be_positive() -> None:
    with pytest.raises(ValueError, match="retry_number"):
        backoff_s(make(), 0, 1)


def test_seed_is_stable_across_processes() -> None:
    assert seed_for(42, 2) == seed_for(42, 2) != seed_for(42, 3) != seed_for(43, 3)
    code = "from flagsched.schemas.retry import seed_for; print(seed_for(42, 2))"
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert int(out.stdout) == seed_for(42, 2)


def test_planned_delay_uses_the_upcoming_attempt_as_seed() -> None:
    policy = make(Jitter.FULL)
    for failed in (1, 2, 5):
        expected = backoff_s(policy, failed, seed_for(9, failed + 1))
        assert planned_delay_s(policy, 9, failed) == expected


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (
            datetime(2024, 12, 31, 23, 59, 30, tzinfo=UTC),
            datetime(2025, 1, 1, 0, 0, 30, tzinfo=UTC),
        ),
        (
            datetime(2024, 2, 28, 23, 59, 30, tzinfo=UTC),
            datetime(2024, 2, 29, 0, 0, 30, tzinfo=UTC),
        ),
        (
            datetime(2024, 12, 31, 23, 59, 30, tzinfo=timezone(timedelta(hours=-5))),
            datetime(2025, 1, 1, 5, 0, 30, tzinfo=UTC),
        ),
    ],
)
def test_next_attempt_crosses_midnight_in_utc(now: datetime, expected: datetime) -> None:
    at = next_attempt_at(make(base_s=60.0, multiplier=1.0), 1, 0, now)
    assert at == expected
    assert at.tzinfo is UTC


def test_next_attempt_rejects_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_attempt_at(make(), 1, 0, datetime(2024, 12, 31, 23, 59, 30))  # noqa: DTZ001


@given(policies(), st.integers(1, 100), seeds, st.datetimes(timezones=st.timezones()))
def test_next_attempt_is_utc_now_plus_backoff(
    policy: RetryPolicy, n: int, seed: int, now: datetime
) -> None:
    at = next_attempt_at(policy, n, seed, now)
    assert at.utcoffset() == timedelta(0)
    assert abs((at - now).total_seconds() - backoff_s(policy, n, seed)) <= 1e-6


def test_merged_later_wins_and_none_is_skipped() -> None:
    merged = make().merged(PolicyOverride(base_s=1.0), None, PolicyOverride(base_s=3.0))
    assert merged.base_s == 3.0
    assert merged.cap_s == 3600.0
    with pytest.raises(ValidationError, match="floor_s"):
        make().merged(PolicyOverride(floor_s=50.0, cap_s=10.0))


def test_override_is_strict_about_keys_and_parses_jsonb() -> None:
    assert PolicyOverride.model_validate({"jitter": "equal"}).jitter is Jitter.EQUAL
    with pytest.raises(ValidationError, match="bogus"):
        PolicyOverride.model_validate({"bogus": 1})
    with pytest.raises(ValidationError, match="cap_s"):
        PolicyOverride.model_validate({"cap_s": -1})


def test_policy_for_precedence() -> None:
    base = make(max_retries=7)
    assert policy_for(base, None, None) == base
    assert policy_for(base, None, "something_else") == base
    lock = policy_for(base, None, "lock_contention")
    assert (lock.base_s, lock.multiplier, lock.cap_s, lock.max_retries) == (0.5, 2.0, 30.0, 7)
    for cls in ("deadlock", "serialization"):
        adjusted = policy_for(base, None, cls)
        assert (adjusted.base_s, adjusted.cap_s) == (0.2, 10.0)
    # The schedule's explicit choice beats the class adjustment, field by field.
    mine = policy_for(base, PolicyOverride(cap_s=100.0), "deadlock")
    assert (mine.base_s, mine.cap_s) == (0.2, 100.0)


def test_class_adjustment_never_drops_cap_below_floor() -> None:
    assert policy_for(make(floor_s=20.0), None, "deadlock").cap_s == 20.0
    assert policy_for(make(), PolicyOverride(floor_s=15.0), "deadlock").cap_s == 15.0


@given(
    st.sampled_from([None, *CLASS_ADJUSTMENTS]),
    st.builds(
        PolicyOverride,
        base_s=st.none() | st.floats(0.01, 5.0),
        jitter=st.none() | st.sampled_from(Jitter),
    ),
)
def test_schedule_override_always_wins(error_class: str | None, override: PolicyOverride) -> None:
    effective = policy_for(make(), override, error_class)
    for name, value in override.model_dump(exclude_none=True).items():
        assert getattr(effective, name) == value


def test_from_settings() -> None:
    settings = Settings(backoff_base_s=3.0, backoff_floor_s=1.0, jitter="equal", max_retries=2)
    policy = settings.default_retry_policy()
    assert (policy.base_s, policy.floor_s, policy.jitter, policy.max_retries) == (
        3.0,
        1.0,
        Jitter.EQUAL,
        2,
    )


@pytest.mark.parametrize(("max_retries", "last_allowed"), [(0, 1), (1, 2), (5, 6)])
def test_exhaustion_boundary(max_retries: int, last_allowed: int) -> None:
    policy = make(max_retries=max_retries)
    assert not any(is_exhausted(policy, a) for a in range(1, last_allowed))
    assert is_exhausted(policy, last_allowed)
    assert is_exhausted(policy, last_allowed + 1)
    with pytest.raises(ValueError, match="attempt"):
        is_exhausted(policy, 0)


def test_preview_matches_the_worker_calls() -> None:
    policy = make(Jitter.FULL, max_retries=6)
    start = datetime(2024, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=2)))
    plan = preview(policy, 42, start, LADDER)
    assert [p.attempt for p in plan] == [2, 3, 4, 5, 6, 7]
    at = start
    for p in plan:
        n = p.attempt - 1
        assert p.delay_s == backoff_s(policy, n, seed_for(42, n + 1))
        at = next_attempt_at(policy, n, seed_for(42, n + 1), at)
        assert p.at == at
        assert p.at.utcoffset() == timedelta(0)
        assert p.tiers == hop_path(LADDER, p.delay_s)


def test_preview_resumes_and_caps() -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    policy = make(max_retries=6)
    assert [p.attempt for p in preview(policy, 1, start, LADDER, attempts_failed=4)] == [6, 7]
    assert preview(policy, 1, start, LADDER, attempts_failed=6) == []
    many = preview(make(max_retries=5000), 1, start, LADDER)
    assert len(many) == MAX_PREVIEW_ATTEMPTS
    with pytest.raises(ValueError, match="timezone-aware"):
        preview(policy, 1, datetime(2025, 1, 1), LADDER)  # noqa: DTZ001
