"""The delay-tier ladder: a fixed set of Kafka topics, one per delay.

Every retry of every schedule shares the same ladder (e.g. 1s, 5s, 30s, 2m, 10m, 1h), so
the number of topics never depends on ``max_retries``.  A record whose retry is due in
``remaining`` seconds hops to the largest tier not exceeding ``remaining``, waits there,
and repeats with what is left; below the smallest tier it is held in place until due.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

#: :func:`hop_path` refuses paths longer than this instead of building a huge list.
MAX_HOPS = 100_000


def _check_ladder(ladder: Sequence[float]) -> None:
    # A zero or negative tier would never reduce the remaining time (endless hopping).
    if not ladder:
        raise ValueError("the tier ladder is empty")
    if any(not math.isfinite(t) or t <= 0 for t in ladder):
        raise ValueError(f"tiers must be positive and finite, got {list(ladder)}")


def _largest_not_above(ladder: Sequence[float], remaining: float | Fraction) -> float | None:
    return max((t for t in ladder if t <= remaining), default=None)


def pick_tier(ladder: Sequence[float], remaining_s: float) -> float | None:
    """The largest tier not exceeding ``remaining_s``, or ``None`` when ``remaining_s`` is
    below the smallest tier (or not a number): the record is then held until due.

    The ladder need not be sorted; it must be non-empty with positive, finite tiers.
    """
    _check_ladder(ladder)
    return _largest_not_above(ladder, remaining_s)


def hop_path(ladder: Sequence[float], delay_s: float) -> list[float]:
    """The tiers a record visits for ``delay_s`` if each hop picks :func:`pick_tier` of what
    remains.  For previews and tests; the worker re-reads the clock at every hop instead.

    The remainder is tracked with exact rationals so float rounding cannot break the
    invariants: ``0 <= delay_s - sum(path) < min(ladder)`` holds exactly.  Raises
    ``ValueError`` for a negative or non-finite delay, or a path over :data:`MAX_HOPS`.
    """
    _check_ladder(ladder)
    if not math.isfinite(delay_s) or delay_s < 0:
        raise ValueError(f"delay_s must be finite and >= 0, got {delay_s}")
    path: list[float] = []
    remaining = Fraction(delay_s)
    while (tier := _largest_not_above(ladder, remaining)) is not None:
        if len(path) >= MAX_HOPS:
            raise ValueError(f"{delay_s}s needs more than {MAX_HOPS} hops on this ladder")
        path.append(tier)
        remaining -= Fraction(tier)
    return path


def tier_suffix(seconds: float) -> str:
    """Topic-name suffix for a tier: ``1s``, ``30s``, ``2m``, ``10m``, ``1h``, ``1500ms``.

    Whole seconds use the largest unit that divides them exactly (h, m, s); whole
    milliseconds use ``ms``; anything finer falls back to the float's shortest repr plus
    ``s`` (e.g. ``0.0001234s``), which always contains ``.`` or ``e``.  Each form can be
    parsed back to exactly one float, so distinct values never share a suffix (injective).
    """
    seconds = float(seconds)  # ints are valid floats to mypy but lack is_integer() on 3.11
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a tier must be positive and finite, got {seconds}")
    if seconds.is_integer():
        whole = int(seconds)
        for unit, size in (("h", 3600), ("m", 60)):
            if whole % size == 0:
                return f"{whole // size}{unit}"
        return f"{whole}s"
    millis = round(seconds * 1000)
    # Round-trip check: several floats near 0.001 multiply to exactly 1.0, but only one
    # equals 1/1000 -- without this check they would all be named "1ms".
    if millis / 1000 == seconds:
        return f"{millis}ms"
    return f"{seconds!r}s"
