"""Never early: when a record may be processed, and the partitions held until then.

A record's wake time is derived from its headers and its topic alone, so after
a rebalance (or a restart) the new owner re-derives the same hold: nothing
depends on in-process state. Tier records wake at ``min(due, timestamp + tier)``;
one that still has a tier's worth of time left hops to a smaller tier. A record
waiting for an older schedule of its flag (``flagsched-not-before-ms``) wakes no
earlier than that, and no later than ``timestamp + tier``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from flagsched.schemas.headers import RecordHeaders
from flagsched.schemas.retry.policy import MAX_DELAY_S
from flagsched.schemas.retry.tiers import pick_tier
from flagsched.schemas.topics import TopicLayout


class Timing(StrEnum):
    """What a record's clock says."""

    DUE = "due"
    HOLD = "hold"
    HOP = "hop"


@dataclass(frozen=True)
class Verdict:
    """When and how a record proceeds."""

    timing: Timing
    until_ms: int = 0
    hop_tier_s: float | None = None


def judge(
    layout: TopicLayout, topic: str, timestamp_ms: int, headers: RecordHeaders, now_ms: int
) -> Verdict:
    """Decide whether the record is due now, must be held, or hops to a smaller tier."""
    due_ms = headers.due_ms
    tier_s = layout.tier_topics.get(topic)
    if tier_s is None:
        wake_ms = due_ms
    else:
        tier_end_ms = timestamp_ms + int(tier_s * 1000)
        wake_ms = min(due_ms, tier_end_ms)
        if headers.not_before_ms is not None:
            # Sent round the tier to wait for an older schedule of its flag (due order,
            # consumer/dueorder.py): not before the time the wait set, which a rotation
            # carries unchanged (so rotating it does not put it off), and never more
            # than a tier after it was appended (the broker's time: a forged value
            # cannot hold the partition).
            wake_ms = max(wake_ms, min(headers.not_before_ms, tier_end_ms))
    if now_ms < wake_ms:
        return Verdict(Timing.HOLD, wake_ms)
    remaining_s = (due_ms - now_ms) / 1000
    if remaining_s <= 0:
        return Verdict(Timing.DUE)
    tier = pick_tier(layout.tiers_s, remaining_s)
    if tier is None:
        return Verdict(Timing.HOLD, due_ms)
    return Verdict(Timing.HOP, due_ms, tier)


def latest_due_ms(layout: TopicLayout, topic: str, now_ms: int, lookahead_s: float) -> int:
    """The latest due time a record of ``topic`` can honestly carry, read at ``now_ms``.

    The dispatcher sends to the due and priority topics what is due, and pre-dispatches
    at most ``lookahead_s`` ahead (into a tier); a retry waits at most the longest
    delay a policy allows (``MAX_DELAY_S``). A largest tier is added as slack for
    clocks and for a record read late. A record due later than this is forged or
    broken: held until then, it would hold its whole partition, so it is poison.
    """
    largest_s = max(layout.tiers_s)
    ahead_s = lookahead_s if topic not in layout.tier_topics else max(lookahead_s, MAX_DELAY_S)
    return now_ms + int((ahead_s + largest_s) * 1000)


#: How long a held partition of the smallest tier goes without being fetched again.
SMALLEST_TIER_RECHECK_MS = 20


def partition_wake_ms(layout: TopicLayout, topic: str, wakes_ms: Iterable[int], now_ms: int) -> int:
    """When a partition held at its first waiting record is fetched again.

    At the earliest wake among the records fetched behind the hold, not only the first
    one's (on a tier topic a later record can wake sooner). A partition of the smallest
    tier is fetched again within :data:`SMALLEST_TIER_RECHECK_MS` at the latest: a
    record appended while it is paused is not seen until then, and may be due sooner
    than any fetched so far.
    """
    until = min(wakes_ms)
    if layout.tier_topics.get(topic) == min(layout.tiers_s):
        until = min(until, now_ms + SMALLEST_TIER_RECHECK_MS)
    return until


def rotation_tier(layout: TopicLayout, due_ms: int, now_ms: int) -> float:
    """The tier a held record moves to when a later record of its partition is ready.

    The largest tier that fits the remaining time, else the smallest (where it wakes at
    its due time). Either way it wakes no later than its due time: never early, never
    made later than due by the move.
    """
    tier = pick_tier(layout.tiers_s, (due_ms - now_ms) / 1000)
    return tier if tier is not None else min(layout.tiers_s)


class Holds:
    """Partitions paused until a moment (epoch ms), with the earliest wake-up."""

    def __init__(self) -> None:
        self._until: dict[object, int] = {}

    def hold(self, tp: object, until_ms: int) -> None:
        """Hold ``tp`` until ``until_ms``."""
        self._until[tp] = until_ms

    def expired(self, now_ms: int) -> list[object]:
        """Remove and return the partitions whose time has come."""
        done = [tp for tp, until in self._until.items() if until <= now_ms]
        for tp in done:
            del self._until[tp]
        return done

    def forget(self, partitions: object) -> None:
        """Drop holds of revoked partitions (the new owner re-derives them)."""
        for tp in list(partitions):  # type: ignore[call-overload]
            self._until.pop(tp, None)

    def until(self, tp: object) -> int | None:
        """When ``tp`` is released, if held."""
        return self._until.get(tp)

    def held(self) -> set[object]:
        """Partitions currently held."""
        return set(self._until)

    def next_wake_ms(self) -> int | None:
        """The earliest moment a held partition becomes due."""
        return min(self._until.values(), default=None)
