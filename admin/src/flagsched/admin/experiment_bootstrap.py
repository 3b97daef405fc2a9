"""Percentile bootstrap intervals of quantiles and means, drawn without building the
resamples.

A bootstrap resample is ``n`` draws with replacement from the sorted values ``x``;
sorted, it is ``x[ceil(n * U(i)) - 1]`` for the order statistics ``U(1) <= .. <=
U(n)`` of ``n`` uniforms. A quantile of the resample needs only the one or two order
statistics it interpolates between, and those can be drawn directly: ``U(r)`` is
``Beta(r, n - r + 1)``, and given ``U(r) = u`` the next needed ``U(s)`` is ``u + (1 -
u) * Beta(s - r, n - s + 1)``. So every quantile asked for comes from *the same*
resample (p50 and p99 of one resample, as a resample-then-sort bootstrap would give)
at a cost that does not grow with ``n``. A mean needs how often each distinct value was
drawn: a multinomial, drawn as one binomial per distinct value (each in O(1) expected
time), so its cost grows with the number of *distinct* values, not with ``n``.

The draws follow exactly the distribution of resample-then-compute, so the intervals
mean what a percentile bootstrap means; the numbers for a given seed differ from a
resample-then-sort implementation's (another route through the random stream). Pure
and seeded: the same values (in any order) and seed give the same interval.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence


def quantile_sorted(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, by linear interpolation
    between order statistics."""
    if not ordered:
        raise ValueError("no values")
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _interval(draws: list[float], level: float) -> tuple[float, float]:
    draws.sort()
    tail = (1 - level) / 2
    return (quantile_sorted(draws, tail), quantile_sorted(draws, 1 - tail))


def quantile_draws(
    values: Sequence[float], qs: Sequence[float], *, resamples: int, seed: int
) -> list[list[float]]:
    """Each ``q`` quantile of ``resamples`` bootstrap resamples of ``values`` (one list
    per ``q``; the i-th entries of the lists come from the same resample)."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("no values")
    # Each quantile interpolates between two (1-based) order statistics of a resample.
    plans = []
    for q in qs:
        pos = q * (n - 1)
        lo = math.floor(pos)
        plans.append((lo + 1, min(lo + 1, n - 1) + 1, pos - lo))
    ranks = sorted({r for a, b, _ in plans for r in (a, b)})
    rng = random.Random(seed)
    draws: list[list[float]] = [[] for _ in plans]
    at: dict[int, float] = {}
    for _ in range(resamples):
        u, previous = 0.0, 0
        for r in ranks:
            u += (1 - u) * rng.betavariate(r - previous, n - r + 1)
            previous = r
            at[r] = ordered[min(n - 1, max(0, math.ceil(n * u) - 1))]
        for out, (a, b, frac) in zip(draws, plans, strict=True):
            out.append(at[a] + (at[b] - at[a]) * frac)
    return draws


def bootstrap_quantiles(
    values: Sequence[float],
    qs: Sequence[float],
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[tuple[float, float], ...] | None:
    """The percentile bootstrap interval of each ``q`` quantile in ``qs``, all from the
    same ``resamples`` resamples (``None`` without values)."""
    if not values:
        return None
    draws = quantile_draws(values, qs, resamples=resamples, seed=seed)
    return tuple(_interval(d, level) for d in draws)


def binomial(rng: random.Random, n: int, p: float) -> int:
    """A ``Binomial(n, p)`` draw in O(1) expected time: the waiting-time method when
    fewer than 10 successes are expected, else Hoermann's BTRS rejection (W. Hoermann,
    "The generation of binomial random variates", J. Stat. Comput. Simul. 46, 1993)."""
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if p > 0.5:  # both methods want p <= 1/2
        return n - binomial(rng, n, 1.0 - p)
    if n * p < 10.0:
        # The gaps between successes are geometric: count the successes within n trials.
        log_q = math.log1p(-p)
        got, trial = 0, 0
        while True:
            # Trials before the next success; compared as a float (infinite for a p
            # that rounds log(1 - p) to nearly 0) before it is made an integer.
            failures = math.log(1.0 - rng.random()) / log_q
            if failures >= n - trial:
                return got
            trial += math.floor(failures) + 1
            got += 1
    return _btrs(rng, n, p)


def _btrs(rng: random.Random, n: int, p: float) -> int:
    # Transformed rejection with squeeze: a candidate from a hat over the binomial
    # pmf, accepted at once inside the squeeze, else by the exact log-pmf ratio.
    q = 1.0 - p
    spq = math.sqrt(n * p * q)
    b = 1.15 + 2.53 * spq
    a = -0.0873 + 0.0248 * b + 0.01 * p
    c = n * p + 0.5
    v_r = 0.92 - 4.2 / b
    alpha = (2.83 + 5.1 / b) * spq
    log_pq = math.log(p / q)
    mode = math.floor((n + 1) * p)
    h = math.lgamma(mode + 1) + math.lgamma(n - mode + 1)
    while True:
        u = rng.random() - 0.5
        v = rng.random()
        us = 0.5 - abs(u)
        k = math.floor((2.0 * a / us + b) * u + c) if us > 0 else -1
        if k < 0 or k > n:
            continue
        if us >= 0.07 and v <= v_r:
            return k
        v *= alpha / (a / (us * us) + b)
        if v > 0 and math.log(v) <= (
            h - math.lgamma(k + 1) - math.lgamma(n - k + 1) + (k - mode) * log_pq
        ):
            return k


def mean_draws(values: Sequence[float], *, resamples: int, seed: int) -> list[float]:
    """The means of ``resamples`` bootstrap resamples of ``values``: per resample, one
    binomial draw per distinct value (how often the resample holds it)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    distinct = sorted(Counter(values).items())
    rng = random.Random(seed)
    means = []
    for _ in range(resamples):
        left, weight_left, total = n, n, 0.0
        last = distinct[-1][0]
        for value, count in distinct[:-1]:
            if not left:
                break
            k = binomial(rng, left, count / weight_left)
            total += value * k
            left -= k
            weight_left -= count
        total += last * left
        means.append(total / n)
    return means


def bootstrap_mean(
    values: Sequence[float],
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """The percentile bootstrap interval of the mean (``None`` without values); the
    work is ``resamples`` times the number of distinct values."""
    if not values:
        return None
    return _interval(mean_draws(values, resamples=resamples, seed=seed), level)
