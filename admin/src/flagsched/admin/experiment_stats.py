"""The statistics of an experiment report: Wilson intervals for rates, percentile
bootstrap intervals for times, and the tests behind a verdict.

Pure functions of their inputs (a seed fixes every bootstrap; the report's own
bootstraps are in experiment_bootstrap.py), so a report is reproducible and the
verdict's false-positive rate can be tested by simulation.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from flagsched.admin.experiment_bootstrap import quantile_sorted

#: Two-sided 95 %.
Z95 = 1.959963984540054
#: The verdict's family-wise error rate (Bonferroni over every comparison it makes):
#: identical arms get a verdict in at most 2 % of experiments, well inside the 5 % a
#: "95 %" claim allows even when the test statistics' approximations are a little off.
ALPHA = 0.02


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``successes / n`` (``(0, 1)`` for ``n == 0``)."""
    if n == 0:
        return (0.0, 1.0)
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be within 0..{n}, got {successes}")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # Exact at the ends (rounding would otherwise leave 1.0 just outside for k == n).
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (lo, hi)


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation between order statistics."""
    return quantile_sorted(sorted(values), q)


def bootstrap(
    values: Sequence[float],
    statistic: Callable[[Sequence[float]], float],
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """The percentile bootstrap interval of ``statistic`` (``None`` without values), by
    resampling and computing: any statistic, at O(resamples x n) and more. The report
    uses experiment_bootstrap.py's draws of the same distributions for its quantiles
    and means, whose cost does not grow with ``n``."""
    if not values:
        return None
    rng = random.Random(seed)
    n = len(values)
    stats = sorted(statistic(rng.choices(values, k=n)) for _ in range(resamples))
    tail = (1 - level) / 2
    return (quantile(stats, tail), quantile(stats, 1 - tail))


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


def two_proportion_p(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test (1.0 when undefined)."""
    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    return 2 * _normal_sf(abs(k1 / n1 - k2 / n2) / se)


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test (normal approximation with the tie
    correction; 1.0 when a sample is empty or every value is tied)."""
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    ranks_a = 0.0
    ties = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        rank = (i + j) / 2 + 1  # the average rank of a tied run
        ranks_a += rank * sum(1 for k in range(i, j + 1) if pooled[k][1] == 0)
        t = j - i + 1
        ties += t**3 - t
        i = j + 1
    u = ranks_a - n1 * (n1 + 1) / 2
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if variance <= 0:
        return 1.0
    z = (abs(u - n1 * n2 / 2) - 0.5) / math.sqrt(variance)  # with continuity correction
    return min(1.0, 2 * _normal_sf(max(0.0, z)))


@dataclass(frozen=True)
class ArmSample:
    """What the verdict needs of one arm."""

    name: str
    finished: int  # schedules that ended (applied, dead, superseded or cancelled)
    dead: int
    recovery_s: Sequence[float]  # first failure to applied, of applied schedules that failed


@dataclass(frozen=True)
class Verdict:
    """The winning arm and why, or ``winner is None``: no significant difference."""

    winner: str | None
    reason: str


def verdict(arms: Sequence[ArmSample], alpha: float = ALPHA) -> Verdict:
    """Name a winner only when it beats *every* other arm significantly.

    First on the dead rate (lower wins; two-proportion z-test), then, if that decides
    nothing, on the time from first failure to applied (shorter wins; Mann-Whitney U).
    Bonferroni: each of the ``2 * (arms - 1)`` comparisons is held to
    ``alpha / (2 * (arms - 1))``, so identical arms get a verdict at most ``alpha`` of
    the time.
    """
    if len(arms) < 2:
        return Verdict(None, "fewer than two arms")
    each = alpha / (2 * (len(arms) - 1))

    def rate(a: ArmSample) -> float:
        return a.dead / a.finished if a.finished else 1.0

    best = min(arms, key=rate)
    p_dead = [
        two_proportion_p(best.dead, best.finished, o.dead, o.finished)
        for o in arms
        if o is not best
    ]
    if all(rate(best) < rate(o) for o in arms if o is not best) and max(p_dead) < each:
        return Verdict(best.name, f"lowest dead rate (p <= {max(p_dead):.2g} vs each arm)")

    def median(a: ArmSample) -> float:
        return quantile(a.recovery_s, 0.5) if a.recovery_s else math.inf

    fastest = min(arms, key=median)
    others = [o for o in arms if o is not fastest]
    p_time = [mann_whitney_p(fastest.recovery_s, o.recovery_s) for o in others]
    if all(median(fastest) < median(o) for o in others) and max(p_time) < each:
        return Verdict(fastest.name, f"shortest recovery time (p <= {max(p_time):.2g} vs each arm)")
    return Verdict(None, f"no significant difference (each test at alpha {each:.3g})")
