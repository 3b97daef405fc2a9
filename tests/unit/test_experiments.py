"""Backoff experiments: deterministic assignment, the statistics, and the verdict on
simulated workloads (one arm truly better; identical arms)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from flagsched.admin.experiment_stats import (
    ArmSample,
    bootstrap,
    mann_whitney_p,
    quantile,
    two_proportion_p,
    verdict,
    wilson,
)
from flagsched.admin.experiments import build_report, render_report
from flagsched.schemas.retry.experiments import Experiment, assign, bucket
from flagsched.schemas.retry.policy import Jitter, RetryPolicy
from tests.support.experiment_sim import simulate

DEFAULTS = RetryPolicy(
    max_retries=5, base_s=2.0, multiplier=2.0, cap_s=3600.0, floor_s=0.0, jitter=Jitter.FULL
)
COUNT_ONLY = {"base_s": 0.5, "cap_s": 30.0, "jitter": "full", "max_retries": 5}
BUDGET = {
    "base_s": 0.5,
    "cap_s": 10.0,
    "jitter": "equal",
    "max_retries": 100,
    "max_retry_duration_s": 300,
}


def experiment(name: str, *arms: tuple[str, int, dict[str, object]]) -> Experiment:
    return Experiment.model_validate(
        {"name": name, "arms": [{"name": n, "weight": w, "policy": p} for n, w, p in arms]}
    )


def test_assignment_is_deterministic_and_follows_the_weights() -> None:
    e = experiment("w", ("a", 1, {}), ("b", 3, {"base_s": 1.0}))
    arms = [assign(e, sid).name for sid in range(1, 20_001)]
    assert arms == [assign(e, sid).name for sid in range(1, 20_001)]
    assert abs(arms.count("a") / len(arms) - 0.25) < 0.015
    # Another experiment's name reshuffles; the same name never does.
    other = experiment("w2", ("a", 1, {}), ("b", 3, {"base_s": 1.0}))
    assert [assign(other, s).name for s in range(1, 200)] != arms[:199]
    assert 0 <= bucket("w", 1) < 2**60


def test_experiment_validation() -> None:
    with pytest.raises(ValidationError, match="distinct"):
        experiment("x", ("a", 1, {}), ("a", 1, {}))
    with pytest.raises(ValidationError, match="weight"):
        Experiment.model_validate(
            {"name": "x", "arms": [{"name": "a", "weight": 1.5, "policy": {}}]}
        )
    with pytest.raises(ValidationError, match="bogus"):
        experiment("x", ("a", 1, {"bogus": 1}))
    with pytest.raises(ValidationError, match="name"):
        experiment("bad name!", ("a", 1, {}))


@given(st.integers(0, 500), st.integers(1, 500))
def test_wilson_contains_the_estimate_and_stays_in_bounds(k: int, n: int) -> None:
    k = min(k, n)
    lo, hi = wilson(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    lo4, hi4 = wilson(4 * k, 4 * n)
    assert hi4 - lo4 <= hi - lo + 1e-12  # four times the data: a narrower interval


def test_wilson_known_value() -> None:
    lo, hi = wilson(81, 263)  # the textbook example: 0.2553 .. 0.3662
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)


@given(st.lists(st.floats(0, 1e4), min_size=1, max_size=50), st.integers(0, 2**32))
def test_bootstrap_interval_is_within_the_data_and_seeded(values: list[float], seed: int) -> None:
    ci = bootstrap(values, lambda v: quantile(v, 0.5), resamples=50, seed=seed)
    assert ci is not None
    assert min(values) <= ci[0] <= ci[1] <= max(values)
    assert ci == bootstrap(values, lambda v: quantile(v, 0.5), resamples=50, seed=seed)


def test_tests_separate_clear_differences_only() -> None:
    assert two_proportion_p(10, 100, 30, 100) < 0.001
    assert two_proportion_p(10, 100, 11, 100) > 0.5
    assert two_proportion_p(0, 10, 0, 10) == 1.0
    assert mann_whitney_p([1, 2, 3, 4, 5] * 10, [6, 7, 8, 9, 10] * 10) < 1e-6
    assert mann_whitney_p([1, 2, 3] * 10, [1, 2, 3] * 10) > 0.9
    assert mann_whitney_p([], [1.0]) == 1.0


def test_a_truly_better_arm_is_named() -> None:
    # Locks held up to 20 s: the count-only policy (5 full-jitter retries from 0.5 s)
    # exhausts many; the time-budget policy applies them all.
    e = experiment("lock-budget", ("count", 1, COUNT_ONLY), ("budget", 1, BUDGET))
    outcomes = simulate(e, DEFAULTS, schedules=400, seed=1, max_hold_s=20.0)
    report = build_report(e, outcomes, resamples=200)
    assert report.verdict.winner == "budget", report.verdict
    by = {a.arm: a for a in report.arms}
    assert by["budget"].dead == 0 and by["count"].dead > 50
    assert by["count"].dead_rate_ci[0] > by["budget"].dead_rate_ci[1]
    text = render_report(report)
    assert "verdict: budget wins: lowest dead rate" in text


def test_recovery_time_decides_when_nobody_dies() -> None:
    # Both survive every lock; the tighter cap notices the release sooner.
    slow = dict(BUDGET, cap_s=60.0)
    e = experiment("cap", ("slow", 1, slow), ("fast", 1, BUDGET))
    outcomes = simulate(e, DEFAULTS, schedules=600, seed=2, max_hold_s=120.0)
    report = build_report(e, outcomes, resamples=100)
    assert {a.arm: a.dead for a in report.arms} == {"slow": 0, "fast": 0}
    assert report.verdict.winner == "fast", report.verdict
    assert "recovery" in report.verdict.reason


def test_identical_arms_get_no_verdict_in_at_least_95_percent_of_seeded_runs() -> None:
    e = experiment("null", ("a", 1, COUNT_ONLY), ("b", 1, COUNT_ONLY))
    runs = 200
    winners = []
    for seed in range(runs):
        outcomes = simulate(e, DEFAULTS, schedules=200, seed=seed, max_hold_s=10.0)
        report = build_report(e, outcomes, resamples=20, seed=seed)
        winners.append(report.verdict.winner)
    false_positives = sum(w is not None for w in winners)
    assert false_positives <= 0.05 * runs, false_positives


def test_the_null_runs_are_not_degenerate() -> None:
    # Both arms of the null experiment see deaths and recoveries, so both tests are used.
    e = experiment("null", ("a", 1, COUNT_ONLY), ("b", 1, COUNT_ONLY))
    report = build_report(e, simulate(e, DEFAULTS, schedules=200, seed=0, max_hold_s=10.0))
    for arm in report.arms:
        assert 0 < arm.dead < arm.finished and arm.recovered > 10
        assert arm.recovery_p50_s is not None and math.isfinite(arm.recovery_p50_s)


def test_verdict_needs_two_arms() -> None:
    assert verdict([ArmSample("a", 10, 1, [1.0])]).winner is None
