"""Properties of the retry maths: bounds, determinism, overflow, time zones, precedence."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from itertools import islice

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
    planned_delays,
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
        base_s=draw(st.floats(min_value=0.0, max_value=cap, exclude_min=True)),
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


@given(policies(st.just(Jitter.DECORRELATED)), st.integers(0, 2**63), st.integers(1, 40))
def test_decorrelated_is_the_aws_recurrence_on_the_seeded_chain(
    policy: RetryPolicy, schedule_id: int, n: int
) -> None:
    # AWS Architecture Blog: sleep = min(cap, uniform(base, 3 * previous sleep)), sleep_0 =
    # base; "previous" is the delay actually planned before, replayed from its seed.
    p = policy.merged(PolicyOverride(floor_s=0.0))
    chain = list(islice(planned_delays(p, schedule_id), n))
    previous = p.base_s
    for k, delay in enumerate(chain, start=1):
        assert p.base_s <= delay <= min(p.cap_s, 3 * previous) * (1 + 1e-12)
        expected = min(
            p.cap_s, random.Random(seed_for(schedule_id, k + 1)).uniform(p.base_s, 3 * previous)
        )
        assert delay == max(p.floor_s, min(p.cap_s, expected))
        assert planned_delay_s(p, schedule_id, k) == delay
        previous = delay


def test_decorrelated_grows_from_the_previous_sleep_not_the_raw_delay() -> None:
    # A multiplier of 1 keeps the raw delay at base; the blog's recurrence still grows.
    policy = make(Jitter.DECORRELATED, base_s=1.0, multiplier=1.0, cap_s=1000.0)
    tenth = [planned_delay_s(policy, sid, 10) for sid in range(200)]
    assert sum(tenth) / len(tenth) > 3.0


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


@given(
    st.floats(allow_nan=True) | st.booleans() | st.text(max_size=3) | st.decimals(),
    st.sampled_from(Jitter),
)
def test_retry_numbers_that_are_not_integers_are_rejected(number: object, jitter: Jitter) -> None:
    policy = make(jitter)
    for call in (
        lambda: backoff_s(policy, number, 1),  # type: ignore[arg-type]
        lambda: planned_delay_s(policy, 1, number),  # type: ignore[arg-type]
        lambda: is_exhausted(policy, number),  # type: ignore[arg-type]
    ):
        with pytest.raises(TypeError, match="must be an integer"):
            call()


@pytest.mark.parametrize("value", [2.5, 2.0, "3", True])
def test_policy_max_retries_must_be_an_integer(value: object) -> None:
    with pytest.raises(ValidationError, match="max_retries"):
        PolicyOverride.model_validate({"max_retries": value})
    with pytest.raises(ValidationError, match="max_retries"):
        RetryPolicy.model_validate(make().model_dump() | {"max_retries": value})


@given(st.floats(1e-3, 1e6), st.floats(1e-3, 1e6))
def test_base_above_cap_is_rejected(base_s: float, cap_s: float) -> None:
    data = make().model_dump() | {"base_s": base_s, "cap_s": cap_s}
    if base_s > cap_s:
        with pytest.raises(ValidationError, match="base_s must not be above cap_s"):
            RetryPolicy.model_validate(data)
    else:
        assert RetryPolicy.model_validate(data).base_s == base_s


def test_settings_reject_base_above_cap() -> None:
    with pytest.raises(ValidationError, match="backoff_cap_s must not be below backoff_base_s"):
        Settings(backoff_base_s=20.0, backoff_cap_s=10.0)


@given(
    st.sampled_from([None, *CLASS_ADJUSTMENTS]),
    st.floats(0.01, 100.0),
    st.none() | st.floats(0.01, 100.0),
)
def test_across_layers_the_cap_wins_over_a_larger_base(
    error_class: str | None, base_s: float, cap_s: float | None
) -> None:
    # As min(cap, ...) always did: a schedule's base above a class or global cap waits
    # the cap, and never fails the worker's merge.
    effective = policy_for(make(cap_s=50.0), PolicyOverride(base_s=base_s), error_class)
    assert effective.base_s == min(base_s, effective.cap_s)
    global_small_cap = make(base_s=0.01, cap_s=3.0)  # the integration tests' defaults
    override = PolicyOverride(base_s=base_s, cap_s=cap_s if cap_s and cap_s >= base_s else None)
    assert policy_for(global_small_cap, override, error_class).base_s <= 100.0


def test_an_override_inconsistent_in_itself_is_rejected() -> None:
    with pytest.raises(ValidationError, match="base_s must not be above cap_s"):
        PolicyOverride(base_s=5.0, cap_s=1.0)
    with pytest.raises(ValidationError, match="floor_s must not be above cap_s"):
        PolicyOverride.model_validate({"floor_s": 5, "cap_s": 1})


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
    assert (lock.base_s, lock.multiplier, lock.cap_s, lock.jitter) == (0.5, 2.0, 10.0, "equal")
    assert (lock.max_retries, lock.max_retry_duration_s) == (100, 300.0)
    for cls in ("deadlock", "serialization"):
        adjusted = policy_for(base, None, cls)
        assert (adjusted.base_s, adjusted.cap_s) == (0.2, 10.0)
    # The schedule's explicit choice beats the class adjustment, field by field.
    mine = policy_for(base, PolicyOverride(cap_s=100.0), "deadlock")
    assert (mine.base_s, mine.cap_s) == (0.2, 100.0)
    # A schedule base above the class cap waits the cap (as min(cap, ...) always did).
    assert policy_for(base, PolicyOverride(base_s=20.0), "deadlock").base_s == 10.0


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


# --- the time budget (max_retry_duration_s) ---------------------------------------------

T0 = datetime(2025, 1, 1, tzinfo=UTC)


@given(
    st.integers(0, 20),
    st.floats(0.1, 1e5),
    st.integers(1, 30),
    st.floats(0.0, 2e5),
)
def test_exhausted_by_whichever_bound_comes_first(
    max_retries: int, budget_s: float, attempt: int, age_s: float
) -> None:
    policy = make(max_retries=max_retries, max_retry_duration_s=budget_s)
    now = T0 + timedelta(seconds=age_s)
    by_count = attempt >= 1 + max_retries
    by_time = (now - T0).total_seconds() >= budget_s
    assert is_exhausted(policy, attempt, first_failed_at=T0, now=now) == (by_count or by_time)
    # Without a budget (or without the times) only the count counts.
    assert is_exhausted(make(max_retries=max_retries), attempt, first_failed_at=T0, now=now) == (
        by_count
    )
    assert is_exhausted(policy, attempt) == by_count


@given(st.sampled_from(Jitter), st.integers(0, 10**6), st.floats(1.0, 600.0))
def test_preview_stops_where_the_budget_ends(jitter: Jitter, sid: int, budget_s: float) -> None:
    policy = make(jitter, max_retries=10_000, base_s=0.5, cap_s=10.0, max_retry_duration_s=budget_s)
    plan = preview(policy, sid, T0, LADDER)
    # Every planned attempt except the last one started before the budget ran out; the
    # last one is the first to fail at or after it (or the count ran out: not here).
    assert plan, "the first failure is always retried"
    assert all((p.at - T0).total_seconds() < budget_s for p in plan[:-1])
    assert (plan[-1].at - T0).total_seconds() >= budget_s or len(plan) == MAX_PREVIEW_ATTEMPTS


def test_budget_is_measured_from_the_first_failure_when_resuming() -> None:
    policy = make(max_retries=100, base_s=1.0, multiplier=1.0, cap_s=1.0, max_retry_duration_s=10)
    later = T0 + timedelta(seconds=5)
    resumed = preview(policy, 1, later, LADDER, attempts_failed=4, retrying_since=T0)
    assert [p.at for p in resumed] == [T0 + timedelta(seconds=s) for s in range(6, 11)]


def test_lock_contention_default_survives_a_lock_held_for_a_minute() -> None:
    # Preview equals reality: for every schedule the default lock-contention policy still
    # plans attempts after the lock has been held for 60 s (measured: the old 0.5 s /
    # full / 5 retries spent everything in 2.7 s).
    policy = policy_for(Settings().default_retry_policy(), None, "lock_contention")
    for sid in range(500):
        plan = preview(policy, sid, T0, LADDER)
        assert (plan[-1].at - T0).total_seconds() >= 60.0, sid
        assert all(p.delay_s <= 10.0 for p in plan)  # the lock's release is seen within 10 s
    old = make(Jitter.FULL, base_s=0.5, cap_s=30.0, max_retries=5)
    ends = [(preview(old, sid, T0, LADDER)[-1].at - T0).total_seconds() for sid in range(100)]
    assert min(ends) < 7


def test_budget_from_settings_and_overrides() -> None:
    settings = Settings(max_retry_duration_s=90.0)
    assert settings.default_retry_policy().max_retry_duration_s == 90.0
    override = PolicyOverride(max_retry_duration_s=5.0)
    mine = policy_for(settings.default_retry_policy(), override, None)
    assert mine.max_retry_duration_s == 5.0
    with pytest.raises(ValidationError, match="max_retry_duration_s"):
        PolicyOverride.model_validate({"max_retry_duration_s": 0})
