"""Never early: the timing judgement is derived from headers and topic alone."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flagsched.consumer.holds import (
    SMALLEST_TIER_RECHECK_MS,
    Holds,
    Timing,
    judge,
    partition_wake_ms,
    rotation_tier,
)
from flagsched.schemas.headers import RecordHeaders
from flagsched.schemas.topics import TopicLayout

LAYOUT = TopicLayout(prefix="fs", tiers_s=(1.0, 5.0, 30.0))
T0 = 1_800_000_000_000


def h(due_ms: int) -> RecordHeaders:
    return RecordHeaders(attempt=2, due_ms=due_ms)


def test_due_topic_holds_until_due_then_processes():
    assert judge(LAYOUT, LAYOUT.due, T0, h(T0 + 700), T0).timing is Timing.HOLD
    assert judge(LAYOUT, LAYOUT.due, T0, h(T0 + 700), T0).until_ms == T0 + 700
    assert judge(LAYOUT, LAYOUT.due, T0, h(T0 + 700), T0 + 700).timing is Timing.DUE


def test_tier_record_wakes_after_its_tier_then_hops_down():
    tier = LAYOUT.tier_topic(30.0)
    due = T0 + 40_000
    v = judge(LAYOUT, tier, T0, h(due), T0 + 1)
    assert (v.timing, v.until_ms) == (Timing.HOLD, T0 + 30_000)
    v = judge(LAYOUT, tier, T0, h(due), T0 + 30_000)
    assert (v.timing, v.hop_tier_s) == (Timing.HOP, 5.0)


def test_a_rotated_record_never_wakes_after_its_due_time():
    # Largest tier that fits the remaining time; below the smallest, the smallest
    # (where it wakes at its due time, since due < timestamp + tier).
    assert rotation_tier(LAYOUT, T0 + 12_000, T0) == 5.0
    assert rotation_tier(LAYOUT, T0 + 1_000, T0) == 1.0
    assert rotation_tier(LAYOUT, T0 + 300, T0) == 1.0
    for due in (T0 + 300, T0 + 1_000, T0 + 7_500, T0 + 45_000):
        tier = rotation_tier(LAYOUT, due, T0)
        v = judge(LAYOUT, LAYOUT.tier_topic(tier), T0, h(due), T0)
        assert v.timing is Timing.HOLD
        assert v.until_ms <= due


def test_remaining_below_smallest_tier_is_held_in_place():
    tier = LAYOUT.tier_topic(1.0)
    v = judge(LAYOUT, tier, T0, h(T0 + 1500), T0 + 1000)
    assert (v.timing, v.until_ms) == (Timing.HOLD, T0 + 1500)


@given(
    topic=st.sampled_from([LAYOUT.due, *LAYOUT.tier_topics]),
    ts=st.integers(T0 - 10**7, T0 + 10**7),
    due=st.integers(T0 - 10**7, T0 + 10**8),
    now=st.integers(T0 - 10**7, T0 + 10**8),
)
def test_never_due_before_due_time(topic, ts, due, now):
    v = judge(LAYOUT, topic, ts, h(due), now)
    if v.timing is Timing.DUE:
        assert now >= due
    if v.timing is Timing.HOLD:
        assert v.until_ms > now and v.until_ms <= due
    if v.timing is Timing.HOP:
        assert v.hop_tier_s is not None and v.hop_tier_s * 1000 <= due - now


def test_a_record_waiting_for_an_older_schedule_is_not_tried_before_its_wait_ends():
    # Due already: without the wait it would be tried again at once, and spin.
    tier = LAYOUT.tier_topic(1.0)
    waiting = RecordHeaders(attempt=1, due_ms=T0 - 5_000, order_waits=3, not_before_ms=T0 + 900)
    v = judge(LAYOUT, tier, T0, waiting, T0 + 10)
    assert (v.timing, v.until_ms) == (Timing.HOLD, T0 + 900)
    assert judge(LAYOUT, tier, T0, waiting, T0 + 900).timing is Timing.DUE
    assert judge(LAYOUT, tier, T0, h(T0 - 5_000), T0 + 10).timing is Timing.DUE
    # Rotated behind a ready record (appended again later): the wait does not grow.
    assert judge(LAYOUT, tier, T0 + 500, waiting, T0 + 600).until_ms == T0 + 900
    # A forged wait holds the partition no longer than a tier after the append.
    forged = waiting.model_copy(update={"not_before_ms": T0 + 10**9})
    assert judge(LAYOUT, tier, T0, forged, T0 + 10).until_ms == T0 + 1_000


@given(
    topic=st.sampled_from(list(LAYOUT.tier_topics)),
    ts=st.integers(T0 - 10**7, T0 + 10**7),
    due=st.integers(T0 - 10**7, T0 + 10**8),
    now=st.integers(T0 - 10**7, T0 + 10**8),
    not_before=st.integers(0, T0 + 10**9),
)
def test_a_waiting_record_is_never_early_and_held_at_most_a_tier_past_due(
    topic, ts, due, now, not_before
):
    headers = RecordHeaders(attempt=1, due_ms=due, order_waits=1, not_before_ms=not_before)
    v = judge(LAYOUT, topic, ts, headers, now)
    if v.timing is Timing.DUE:
        assert now >= due and now >= min(not_before, ts + int(LAYOUT.tier_topics[topic] * 1000))
    if v.timing is Timing.HOLD:
        assert now < v.until_ms <= max(due, ts + int(LAYOUT.tier_topics[topic] * 1000))


def test_holds_registry():
    holds = Holds()
    holds.hold("a", 10)
    holds.hold("b", 5)
    assert holds.next_wake_ms() == 5
    assert holds.expired(7) == ["b"]
    holds.forget(["a"])
    assert holds.next_wake_ms() is None


def test_a_held_partition_wakes_at_the_earliest_record_behind_the_hold():
    five = LAYOUT.tier_topic(5.0)
    assert partition_wake_ms(LAYOUT, five, [T0 + 4_000, T0 + 900, T0 + 2_000], T0) == T0 + 900


def test_the_smallest_tier_is_fetched_again_soon_whatever_it_holds():
    one = LAYOUT.tier_topic(1.0)
    wake = partition_wake_ms(LAYOUT, one, [T0 + 900], T0)
    assert wake == T0 + SMALLEST_TIER_RECHECK_MS
    assert partition_wake_ms(LAYOUT, one, [T0 + 5], T0) == T0 + 5


@given(
    topic=st.sampled_from([LAYOUT.due, LAYOUT.priority, *LAYOUT.tier_topics]),
    wakes=st.lists(st.integers(T0, T0 + 10**8), min_size=1, max_size=20),
    now=st.integers(T0 - 10**5, T0 + 10**5),
)
def test_a_partition_hold_never_outlasts_a_record_behind_it(topic, wakes, now):
    assert partition_wake_ms(LAYOUT, topic, wakes, now) <= min(wakes)
