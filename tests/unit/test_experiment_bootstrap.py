"""The report's bootstrap draws (experiment_bootstrap.py): they follow the distribution
of resampling-then-computing, p50 and p99 come from the same resample, they are seeded,
they cover; and the report's bound on the work."""

from __future__ import annotations

import argparse
import bisect
import math
import random
import statistics
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flagsched.admin.experiment_bootstrap import (
    binomial,
    bootstrap_mean,
    bootstrap_quantiles,
    mean_draws,
    quantile_draws,
    quantile_sorted,
)
from flagsched.admin.experiment_stats import quantile
from flagsched.admin.experiments import (
    MAX_BOOTSTRAP_DRAWS,
    Outcome,
    ReportTooCostly,
    bootstrap_draws,
    build_report,
)
from flagsched.admin.stats import register as register_stats
from flagsched.schemas.retry.experiments import Experiment

VALUES = [0.5, 1.0, 1.5, 2.0, 3.5, 4.0, 7.0, 9.0, 12.0, 30.0, 31.0]


def _exact_order_statistic_cdf(n: int, r: int, j: int) -> float:
    """P(the r-th smallest of n draws with replacement is at most the j-th smallest
    of the n values), i.e. P(Binomial(n, j / n) >= r)."""
    p = j / n
    return sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(r, n + 1))


def _ecdf(draws: Sequence[float], x: float) -> float:
    return sum(d <= x for d in draws) / len(draws)


def _resampled(
    values: Sequence[float], qs: Sequence[float], resamples: int, seed: int
) -> list[list[float]]:
    """The reference: resample, sort, compute each quantile of the same resample."""
    rng = random.Random(seed)
    out: list[list[float]] = [[] for _ in qs]
    for _ in range(resamples):
        resample = sorted(rng.choices(values, k=len(values)))
        for column, q in zip(out, qs, strict=True):
            column.append(quantile_sorted(resample, q))
    return out


def test_a_drawn_order_statistic_has_the_exact_resampling_distribution() -> None:
    # n = 11, q = 0.5 hits the 6th order statistic exactly (no interpolation).
    n, draws = len(VALUES), 20_000
    (median,) = quantile_draws(VALUES, [0.5], resamples=draws, seed=1)
    for j in range(1, n + 1):
        # DKW: a deviation of 0.02 over 20,000 draws has probability < 1e-6.
        assert abs(_ecdf(median, VALUES[j - 1]) - _exact_order_statistic_cdf(n, 6, j)) < 0.02


def test_joint_quantile_draws_match_resampling_then_sorting() -> None:
    # Marginals and the joint law of (p50, p99) against the reference implementation:
    # two independent samples of 8,000; a two-sample deviation of 0.035 is p < 1e-3.
    values = [random.Random(7).lognormvariate(1.0, 1.0) for _ in range(60)]
    qs = (0.5, 0.99)
    fast = quantile_draws(values, qs, resamples=8000, seed=2)
    slow = _resampled(values, qs, 8000, seed=3)
    for f, s in zip(fast, slow, strict=True):
        for x in (quantile(s, p) for p in (0.1, 0.25, 0.5, 0.75, 0.9)):
            assert abs(_ecdf(f, x) - _ecdf(s, x)) < 0.035
    m50, m99 = statistics.median(slow[0]), statistics.median(slow[1])

    def both_high(p50: list[float], p99: list[float]) -> float:
        return sum(a > m50 and b > m99 for a, b in zip(p50, p99, strict=True)) / len(p50)

    assert abs(both_high(*fast) - both_high(*slow)) < 0.035
    # The same resample: its p50 never exceeds its p99.
    assert all(a <= b for a, b in zip(*fast, strict=True))


def test_mean_draws_match_resampling_then_averaging() -> None:
    values = [1.0] * 40 + [2.0] * 25 + [3.0] * 10 + [5.0] * 4 + [8.0]
    fast = mean_draws(values, resamples=8000, seed=4)
    rng = random.Random(5)
    slow = [statistics.fmean(rng.choices(values, k=len(values))) for _ in range(8000)]
    for x in (quantile(slow, p) for p in (0.05, 0.25, 0.5, 0.75, 0.95)):
        assert abs(_ecdf(fast, x) - _ecdf(slow, x)) < 0.035
    # The bootstrap mean's variance is the population variance over n.
    expected = statistics.pvariance(values) / len(values)
    assert abs(statistics.variance(fast) / expected - 1) < 0.06
    assert abs(statistics.fmean(fast) - statistics.fmean(values)) < 4 * math.sqrt(
        expected / len(fast)
    )


@pytest.mark.parametrize(
    ("n", "p"),
    [(200, 0.3), (200, 0.02), (40, 0.8), (5000, 0.5)],
    ids=["btrs", "waiting-time", "mirrored", "large"],
)
def test_binomial_draws_have_the_binomial_law(n: int, p: float) -> None:
    rng = random.Random(6)
    draws = 20_000
    got = [binomial(rng, n, p) for _ in range(draws)]
    var = n * p * (1 - p)
    assert abs(statistics.fmean(got) - n * p) < 4 * math.sqrt(var / draws)
    assert abs(statistics.variance(got) / var - 1) < 0.06
    pmf = [
        math.exp(
            math.lgamma(n + 1)
            - math.lgamma(i + 1)
            - math.lgamma(n - i + 1)
            + i * math.log(p)
            + (n - i) * math.log1p(-p)
        )
        for i in range(n + 1)
    ]
    got.sort()
    cdf = 0.0
    for k in range(n + 1):  # the whole CDF, exactly (DKW: 0.02 is p < 1e-6)
        cdf += pmf[k]
        assert abs(bisect.bisect_right(got, k) / draws - cdf) < 0.02, k


@given(st.integers(0, 5000), st.floats(0, 1), st.integers(0, 2**32))
def test_binomial_stays_within_its_trials(n: int, p: float, seed: int) -> None:
    k = binomial(random.Random(seed), n, p)
    assert 0 <= k <= n
    if p == 0:
        assert k == 0
    if p == 1:
        assert k == n


@given(
    st.lists(st.floats(0, 1e4), min_size=1, max_size=60),
    st.integers(0, 2**32),
    st.randoms(use_true_random=False),
)
def test_intervals_are_within_the_data_seeded_and_order_free(
    values: list[float], seed: int, shuffler: random.Random
) -> None:
    got = bootstrap_quantiles(values, (0.5, 0.99), resamples=50, seed=seed)
    mean = bootstrap_mean(values, resamples=50, seed=seed)
    assert got is not None and mean is not None
    (lo50, hi50), (lo99, hi99) = got
    assert min(values) <= lo50 <= hi50 <= max(values)
    assert min(values) <= lo99 <= hi99 <= max(values)
    assert lo50 <= lo99 and hi50 <= hi99  # each resample's p50 <= its p99
    assert min(values) - 1e-9 <= mean[0] <= mean[1] <= max(values) + 1e-9
    shuffled = list(values)
    shuffler.shuffle(shuffled)
    assert bootstrap_quantiles(shuffled, (0.5, 0.99), resamples=50, seed=seed) == got
    assert bootstrap_mean(shuffled, resamples=50, seed=seed) == mean


def test_no_values_no_interval() -> None:
    assert bootstrap_quantiles([], (0.5,)) is None
    assert bootstrap_mean([]) is None
    with pytest.raises(ValueError, match="no values"):
        quantile_sorted([], 0.5)


def test_the_intervals_cover_the_true_median_and_mean() -> None:
    # Exponential times (true median ln 2) and geometric attempt counts (true mean 2.5),
    # 100 values each: the 95 % intervals cover in at least 90 % of 200 seeded runs (a
    # percentile bootstrap of a skewed mean undercovers a little at this size).
    runs, median_hits, mean_hits = 200, 0, 0
    for seed in range(runs):
        rng = random.Random(seed)
        times = [rng.expovariate(1.0) for _ in range(100)]
        tries = [float(1 + int(math.log(1 - rng.random()) / math.log(0.6))) for _ in range(100)]
        median = bootstrap_quantiles(times, (0.5,), resamples=200, seed=seed)
        assert median is not None
        ((lo, hi),) = median
        median_hits += lo <= math.log(2) <= hi
        mean = bootstrap_mean(tries, resamples=200, seed=seed)
        assert mean is not None
        mean_hits += mean[0] <= 2.5 <= mean[1]
    assert median_hits >= 0.90 * runs, median_hits
    assert mean_hits >= 0.90 * runs, mean_hits


EXPERIMENT = Experiment.model_validate(
    {"name": "cap", "arms": [{"name": "a", "weight": 1, "policy": {}}]}
)


def test_a_report_beyond_the_bound_is_refused_before_any_work() -> None:
    # 500 distinct attempt counts and recovery times: 504 draws per resample.
    outcomes = [Outcome("a", "applied", k, 1.0) for k in range(1, 501)]
    assert bootstrap_draws([outcomes], 1000) == 504 * 1000 > MAX_BOOTSTRAP_DRAWS
    with pytest.raises(ReportTooCostly) as refused:
        build_report(EXPERIMENT, outcomes, resamples=1000)
    assert refused.value.max_resamples == MAX_BOOTSTRAP_DRAWS // 504
    assert f"bound of {MAX_BOOTSTRAP_DRAWS // 504}" in str(refused.value)
    assert bootstrap_draws([outcomes], refused.value.max_resamples) <= MAX_BOOTSTRAP_DRAWS
    assert bootstrap_draws([outcomes], refused.value.max_resamples + 1) > MAX_BOOTSTRAP_DRAWS
    # Only applied schedules are bootstrapped: dead ones' attempts do not count, and an
    # arm without recovery times draws no order statistics.
    others = [Outcome("a", "dead", k, None) for k in range(1, 5000)]
    assert bootstrap_draws([outcomes + others], 10) == 5040
    assert bootstrap_draws([[Outcome("a", "applied", 1, None)]], 10) == 10
    assert build_report(EXPERIMENT, outcomes[:20], resamples=1000).arms[0].recovered == 20


def test_the_cli_takes_resamples_and_seed_within_the_apis_range() -> None:
    parser = argparse.ArgumentParser(prog="flagsched")
    register_stats(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["stats", "--experiment", "x", "--resamples", "500", "--seed", "3"])
    assert (args.resamples, args.seed) == (500, 3)
    assert parser.parse_args(["stats", "--experiment", "x"]).resamples == 1000
    for bad in (["--resamples", "99"], ["--resamples", "10001"], ["--seed", "-1"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["stats", "--experiment", "x", *bad])
