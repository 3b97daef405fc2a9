"""Properties of the delay-tier ladder: tier choice, hop paths and topic suffixes."""

from __future__ import annotations

import math
import re
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flagsched.schemas.retry import MAX_HOPS, hop_path, pick_tier, tier_suffix

LADDER = (1.0, 5.0, 30.0, 120.0, 600.0, 3600.0)

ladders = st.lists(st.floats(min_value=1e-3, max_value=1e4), min_size=1, max_size=8, unique=True)
remainders = st.floats(allow_nan=False, min_value=-10.0, max_value=1e7)
positive = st.floats(min_value=0.0, exclude_min=True, allow_infinity=False)


@pytest.mark.parametrize(
    ("remaining", "tier"),
    [
        (0.0, None),
        (0.999, None),
        (1.0, 1.0),
        (4.9, 1.0),
        (5.0, 5.0),
        (3599.99, 600.0),
        (3600.0, 3600.0),
        (1e9, 3600.0),
        (-1.0, None),
        (math.nan, None),
        (math.inf, 3600.0),
    ],
)
def test_pick_tier_examples(remaining: float, tier: float | None) -> None:
    assert pick_tier(LADDER, remaining) == tier


@given(ladders, remainders)
def test_pick_tier_is_the_largest_tier_that_fits(ladder: list[float], remaining: float) -> None:
    tier = pick_tier(ladder, remaining)
    if remaining < min(ladder):
        assert tier is None
    else:
        assert tier in ladder
        assert tier <= remaining
        assert not [t for t in ladder if tier < t <= remaining]
    assert pick_tier(sorted(ladder), remaining) == tier


@pytest.mark.parametrize("ladder", [[], [0.0], [1.0, -5.0], [1.0, math.inf], [math.nan]])
def test_bad_ladders_are_rejected(ladder: list[float]) -> None:
    with pytest.raises(ValueError, match="tier"):
        pick_tier(ladder, 10.0)
    with pytest.raises(ValueError, match="tier"):
        hop_path(ladder, 10.0)


@st.composite
def ladder_and_delay(draw: st.DrawFn) -> tuple[list[float], float]:
    # Real ladders grow by bounded ratios (1s, 5s, 30s, ...); that bound is what keeps a
    # greedy path short, since a gap of ratio r costs up to r hops of the smaller tier.
    tier = draw(st.floats(min_value=1e-3, max_value=10.0))
    ladder = [tier]
    for ratio in draw(st.lists(st.floats(min_value=1.01, max_value=20.0), max_size=7)):
        ladder.append(ladder[-1] * ratio)
    return draw(st.permutations(ladder)), draw(st.floats(0.0, max(ladder) * 50))


@given(ladder_and_delay())
def test_hop_path_invariants(case: tuple[list[float], float]) -> None:
    ladder, delay = case
    path = hop_path(ladder, delay)
    leftover = Fraction(delay) - sum(map(Fraction, path), Fraction(0))
    assert 0 <= leftover < Fraction(min(ladder))
    assert math.fsum(path) <= delay
    assert delay - math.fsum(path) < min(ladder) * (1 + 1e-9)
    assert path == sorted(path, reverse=True)  # greedy: each hop no longer than the last
    remaining = Fraction(delay)
    for tier in path:
        assert tier == max(t for t in ladder if t <= remaining)
        remaining -= Fraction(tier)


def test_hop_path_examples() -> None:
    assert hop_path(LADDER, 0.0) == []
    assert hop_path(LADDER, 0.5) == []
    assert hop_path(LADDER, 4.5) == [1.0, 1.0, 1.0, 1.0]
    assert hop_path(LADDER, 7325.0) == [3600.0, 3600.0, 120.0, 5.0]
    assert hop_path([0.1, 0.2], 0.30000000000000004) == [0.2, 0.1]


@pytest.mark.parametrize("delay", [-1.0, math.inf, math.nan])
def test_hop_path_rejects_bad_delays(delay: float) -> None:
    with pytest.raises(ValueError, match="delay_s"):
        hop_path(LADDER, delay)


def test_hop_path_refuses_absurd_lengths() -> None:
    with pytest.raises(ValueError, match="hops"):
        hop_path([1.0], MAX_HOPS + 1.0)


@pytest.mark.parametrize(
    ("seconds", "suffix"),
    [
        (1, "1s"),
        (5.0, "5s"),
        (30, "30s"),
        (120, "2m"),
        (600, "10m"),
        (3600, "1h"),
        (1.5, "1500ms"),
        (0.25, "250ms"),
        (90, "90s"),
        (7200, "2h"),
        (0.0001, "0.0001s"),
    ],
)
def test_tier_suffix_examples(seconds: float, suffix: str) -> None:
    assert tier_suffix(seconds) == suffix


def _parse(suffix: str) -> float:
    """Inverse of tier_suffix: if this round-trips, tier_suffix is injective."""
    if suffix.endswith("ms"):
        return int(suffix[:-2]) / 1000
    number, unit = suffix[:-1], suffix[-1]
    if unit == "s" and not number.isdigit():
        return float(number)
    return float(int(number) * {"h": 3600, "m": 60, "s": 1}[unit])


@given(positive)
def test_tier_suffix_round_trips_and_is_topic_safe(seconds: float) -> None:
    suffix = tier_suffix(seconds)
    assert _parse(suffix) == seconds
    assert re.fullmatch(r"[A-Za-z0-9._-]+", suffix)


@given(st.lists(positive, unique=True, max_size=50))
def test_tier_suffix_is_injective(values: list[float]) -> None:
    assert len({tier_suffix(v) for v in values}) == len(values)


@pytest.mark.parametrize("anchor", [0.001, 1.5, 60.0, 3600.0, 0.1])
def test_neighbouring_floats_get_distinct_suffixes(anchor: float) -> None:
    # Floats one ulp apart can multiply to the same whole number of milliseconds.
    below, above = math.nextafter(anchor, 0.0), math.nextafter(anchor, math.inf)
    assert len({tier_suffix(below), tier_suffix(anchor), tier_suffix(above)}) == 3


@pytest.mark.parametrize("seconds", [0.0, -1.0, math.inf, math.nan])
def test_tier_suffix_rejects_non_positive(seconds: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        tier_suffix(seconds)
