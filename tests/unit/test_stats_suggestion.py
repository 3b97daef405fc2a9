"""The max_retries suggestion of `flagsched stats` counts exhausted schedules."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flagsched.admin.stats import suggest_max_retries


def test_exhausted_schedules_keep_the_suggestion_from_settling_on_the_old_limit() -> None:
    # 100 applied within 3 attempts, 50 exhausted after 6 (max_retries 5): ignoring them
    # suggested 2; counting them, no observed number covers 99 %.
    s = suggest_max_retries([(1, 60), (2, 30), (3, 10)], [(6, 50)])
    assert s is not None
    assert (s.lower_bound, s.max_retries, s.sample_size, s.exhausted) == (True, 6, 150, 50)


def test_a_few_exhausted_still_allow_a_number() -> None:
    s = suggest_max_retries([(1, 900), (2, 95), (4, 4)], [(6, 1)])
    assert s is not None
    assert (s.lower_bound, s.attempts, s.max_retries) == (False, 2, 1)
    # 995 / 1000 applied within 2 attempts; one more exhausted schedule and it is 4.
    s = suggest_max_retries([(1, 900), (2, 89), (4, 10)], [(6, 1)])
    assert s is not None and (s.attempts, s.sample_size) == (4, 1000)


def test_empty_sample() -> None:
    assert suggest_max_retries([], []) is None


@given(
    st.dictionaries(st.integers(1, 20), st.integers(1, 1000), max_size=10),
    st.dictionaries(st.integers(1, 20), st.integers(1, 1000), max_size=5),
)
def test_the_suggestion_covers_the_target_of_everything_that_ended(
    applied: dict[int, int], exhausted: dict[int, int]
) -> None:
    s = suggest_max_retries(sorted(applied.items()), sorted(exhausted.items()))
    total = sum(applied.values()) + sum(exhausted.values())
    if total == 0:
        assert s is None
        return
    assert s is not None and s.sample_size == total
    within = sum(n for a, n in applied.items() if a <= s.attempts)
    if s.lower_bound:
        assert sum(applied.values()) / total < 0.99
        assert s.attempts > max(exhausted)
    else:
        assert within / total >= 0.99 - 1e-12
        assert sum(n for a, n in applied.items() if a < s.attempts) / total < 0.99
