"""Due order (consumer/dueorder.py): which waiting schedules an attempt brings first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from flagsched.consumer.decode import Coordinates, Delivery
from flagsched.consumer.dueorder import (
    MAX_ORDER_WAITS,
    NEWEST_ID,
    bounds,
    brought,
    defer,
    due_key,
    gather,
    order,
)
from flagsched.consumer.results import Applied, Attempted, Deferred, Dropped
from flagsched.schemas.events import Priority, ScheduleDue, to_epoch_ms
from flagsched.schemas.headers import RecordHeaders

T0 = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)


def delivery(sid: int, key: str = "f", seconds: float = 0.0, offset: int = 0) -> Delivery:
    at = T0 + timedelta(seconds=seconds)
    event = ScheduleDue(schedule_id=sid, flag_key=key, scheduled_at=at, dispatched_at=at)
    return Delivery(
        event,
        RecordHeaders(attempt=1, due_ms=to_epoch_ms(at)),
        Coordinates("t.retry.1s", 0, offset, 0),
    )


def test_order_is_flag_then_due_time_then_id():
    ds = [delivery(3, "b"), delivery(2, "a", 5), delivery(9, "a", 1), delivery(1, "a", 1)]
    assert [ds[i].event.schedule_id for i in order(ds)] == [1, 9, 2, 3]


def test_each_locked_flag_is_bounded_by_its_newest_delivery():
    ds = [delivery(5, "a", 1), delivery(7, "a", 0), delivery(6, "a", 1), delivery(2, "b")]
    got = bounds(ds, {"a"}, NOW)  # "b" is held elsewhere: nothing is brought for it
    assert got.keys() == {"a"}
    assert got["a"].carrier == 2  # schedule 6: due at +1 s, and 6 > 5
    assert got["a"].before == due_key(ds[2])


def test_the_bound_never_reaches_past_now():
    # a wake-up for a due time later than now (a stale one: the row moved) brings only
    # schedules that are due
    ds = [delivery(4, "a", 7200)]
    assert bounds(ds, {"a"}, NOW)["a"].before == (NOW, NEWEST_ID)


def test_a_brought_schedule_asks_for_attempt_1_at_its_due_time_at_the_carriers_place():
    carrier = delivery(9, "a", 3, offset=42)
    row = {
        "id": 4,
        "flag_key": "a",
        "scheduled_at": T0,
        "priority": "normal",
        "dispatched_at": None,
    }
    d = brought(row, carrier)
    assert (d.event.schedule_id, d.headers.attempt, d.headers.due_ms) == (4, 1, to_epoch_ms(T0))
    assert d.coords == carrier.coords
    assert d.applied_with == 9


def test_a_deferral_counts_its_waits_and_ends_after_the_last():
    d = delivery(5, "a", 2)
    first = defer(d)
    assert isinstance(first, Deferred)
    assert (first.schedule_id, first.attempt, first.carried.order_waits) == (5, 1, 1)
    assert first.carried.due_ms == d.headers.due_ms  # the same attempt, due as before
    waits = 0
    while (got := defer(d)) is not None:
        waits += 1
        assert got.carried.order_waits == waits
        headers = d.headers.model_copy(update={"order_waits": waits})
        d = Delivery(d.event, headers, d.coords)
    assert waits == MAX_ORDER_WAITS  # bounded: then it fails as a locked flag does


def result(sid: int, seconds: float = 0.0) -> Applied:
    at = T0 + timedelta(seconds=seconds)
    return Applied(
        attempt=1,
        schedule_id=sid,
        flag_key="a",
        scheduled_at=at,
        priority=Priority.NORMAL,
        flag_version=1,
    )


def test_gather_attaches_applied_brought_schedules_to_their_carrier_in_due_order():
    results: dict[int, Attempted] = {
        0: result(9, seconds=3),
        1: Dropped(attempt=1, schedule_id=8, flag_key="a", why="stale"),
        2: result(5, seconds=1),  # brought, index 2 = real (2) + 0
        3: result(4, seconds=1),
        # index 4 was brought but did not apply: not recorded, so no result
    }
    out = gather(results, 2, [0, 0, 0])
    assert out.keys() == {0, 1}
    assert [r.schedule_id for r in out[0].also_applied] == [4, 5]
    assert out[1].also_applied == ()


@given(
    st.lists(st.integers(0, 3), min_size=1, max_size=12),
    st.randoms(use_true_random=False),
    st.integers(1, 5),
)
def test_whatever_the_arrival_order_and_batching_a_flag_applies_in_due_order(due_s, rnd, poll_size):
    """A model of the worker: wake-ups arrive in any order, in polls of any size; each
    poll brings the flag's waiting schedules older than its newest one. The flag's
    change log is then in (scheduled_at, id) order and every schedule applies once."""
    schedules = [delivery(sid, "f", s) for sid, s in enumerate(due_s, start=1)]
    arrival = list(schedules)
    rnd.shuffle(arrival)
    waiting = {d.event.schedule_id: d for d in schedules}
    log: list[int] = []
    for start in range(0, len(arrival), poll_size):
        poll = arrival[start : start + poll_size]
        bound = bounds(poll, {"f"}, NOW)["f"]
        ids = {d.event.schedule_id for d in poll}
        extra = [d for sid, d in waiting.items() if sid not in ids and due_key(d) < bound.before]
        everything = [*poll, *extra]
        for i in order(everything):
            sid = everything[i].event.schedule_id
            if sid in waiting:  # else: applied already, its wake-up is dropped
                del waiting[sid]
                log.append(sid)
    assert log == [d.event.schedule_id for d in sorted(schedules, key=due_key)]
