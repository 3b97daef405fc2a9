"""Per-field ordering (consumer/field_order.py): a late schedule sets only what no newer one set."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flagsched.schemas.field_order import Superseded, fields_to_apply, stamped

T0 = datetime(2026, 11, 28, 0, 0, tzinfo=UTC)


def flag(**kw: object) -> dict[str, object]:
    return {"last_scheduled_at": None, "last_schedule_id": None, "field_stamps": {}, **kw}


def sched(sid: int, seconds: float) -> dict[str, object]:
    return {"id": sid, "scheduled_at": T0 + timedelta(seconds=seconds)}


def test_a_new_flag_takes_every_field():
    assert fields_to_apply(flag(), sched(1, 0), {"enabled": True}) == {"enabled": True}


def test_in_order_schedules_apply_whole_and_stamp_their_fields():
    f = flag()
    for sid, sec, update in ((1, 0, {"enabled": True}), (2, 1, {"rollout_percentage": 5})):
        fields = fields_to_apply(f, sched(sid, sec), update)
        assert fields == update
        f.update(stamped(f, sched(sid, sec), fields))
    assert f["last_schedule_id"] == 2
    assert f["field_stamps"] == {
        "enabled": [1795824000000000, 1],
        "rollout_percentage": [1795824001000000, 2],
    }


def test_a_late_schedule_sets_only_the_fields_no_newer_one_set():
    f = flag()
    f.update(stamped(f, sched(2, 10), {"rollout_percentage": 50}))
    late = sched(1, 5)
    fields = fields_to_apply(f, late, {"enabled": True, "rollout_percentage": 10})
    assert fields == {"enabled": True}
    after = stamped(f, late, fields)
    assert after["last_schedule_id"] == 2  # the newest applied stays the newest
    with pytest.raises(Superseded) as sup:
        fields_to_apply(f, late, {"rollout_percentage": 10})
    assert sup.value.by == 2


def test_same_instant_ties_break_by_id():
    f = flag()
    f.update(stamped(f, sched(7, 0), {"enabled": False}))
    with pytest.raises(Superseded):
        fields_to_apply(f, sched(6, 0), {"enabled": True})
    assert fields_to_apply(f, sched(8, 0), {"enabled": True}) == {"enabled": True}


def test_flags_changed_before_field_stamps_count_every_field_as_set_by_the_newest():
    # no field_stamps (migration 0004 adds an empty object): the flag-wide stamp holds
    f = flag(last_scheduled_at=T0 + timedelta(seconds=10), last_schedule_id=2, field_stamps={})
    with pytest.raises(Superseded):
        fields_to_apply(f, sched(1, 5), {"enabled": True})
    # its first stamped change keeps that knowledge for the fields it does not set
    newer = sched(3, 20)
    f.update(stamped(f, newer, fields_to_apply(f, newer, {"rollout_percentage": 1})))
    with pytest.raises(Superseded):
        fields_to_apply(f, sched(1, 5), {"enabled": True})
    assert fields_to_apply(f, sched(4, 15), {"enabled": True}) == {"enabled": True}


FIELDS = ("enabled", "rollout_percentage", "config")
schedules = st.lists(
    st.tuples(
        st.integers(0, 5),  # due second: ties are common
        st.dictionaries(st.sampled_from(FIELDS), st.integers(0, 100), min_size=1),
    ),
    min_size=1,
    max_size=8,
)


def apply_all(order: list[tuple[int, int, dict[str, int]]]) -> dict[str, object]:
    """The flag's fields after applying (id, second, update) items in ``order``."""
    f: dict[str, object] = flag()
    for sid, sec, update in order:
        with contextlib.suppress(Superseded):
            fields = fields_to_apply(f, sched(sid, sec), update)
            f.update(stamped(f, sched(sid, sec), fields))
            f.update(fields)
    return {k: f.get(k) for k in FIELDS}


@given(schedules, st.randoms())
def test_any_arrival_order_ends_as_due_order(items, rnd):
    numbered = [(sid, sec, update) for sid, (sec, update) in enumerate(items, start=1)]
    in_due_order = sorted(numbered, key=lambda s: (s[1], s[0]))
    arrived = list(numbered)
    rnd.shuffle(arrived)
    assert apply_all(arrived) == apply_all(in_due_order)
