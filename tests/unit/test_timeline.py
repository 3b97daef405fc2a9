"""The retry timeline's geometry (flagsched.admin.timeline): examples from the seed and
Hypothesis properties of any drawing (order on the axis, bounds, no overlapping labels)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flagsched.admin.service.models import Attempt
from flagsched.admin.timeline import (
    LABEL_CHARS,
    MAX_PAST,
    MAX_PLANNED,
    MIN_GAP_PX,
    MIN_WIDTH_PX,
    Timeline,
    build_timeline,
    humanize_s,
    relative,
    tier_path,
)
from flagsched.schemas.retry import PlannedAttempt, RetryPolicy, hop_path, preview

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LADDER = (1.0, 5.0, 30.0, 120.0, 600.0, 3600.0)
OUTCOMES = ("applied", "retry", "dead", "superseded", "cancelled")


def attempt(n: int, at: datetime, outcome: str = "retry", **extra: object) -> Attempt:
    fields: dict[str, object] = {
        "attempt": n,
        "started_at": at,
        "finished_at": at + timedelta(milliseconds=20),
        "due_at": at,
        "lateness_ms": 12.0,
        "outcome": outcome,
        "error_class": "lock_contention" if outcome == "retry" else None,
        "error_message": "canceling statement due to lock timeout",
        "dlt_reason": None,
        "next_attempt_at": None,
        "worker": "w-1",
        "trace_id": "ab" * 16,
        "trace_url": f"http://127.0.0.1:16686/trace/{'ab' * 16}",
    }
    return Attempt.model_validate(fields | extra)


def planned(n: int, at: datetime, delay_s: float) -> PlannedAttempt:
    return PlannedAttempt(attempt=n, at=at, delay_s=delay_s, tiers=hop_path(LADDER, delay_s))


def check_drawing(t: Timeline) -> None:
    """The rules every drawing keeps (module docstring)."""
    assert t.x_min <= t.now_x <= t.x_max
    assert t.start <= t.now <= t.end
    for m in t.marks:
        assert t.x_min <= m.x <= t.x_max
        assert m.box.x >= 0 and m.box.x + m.box.w <= t.width + 1e-9
        assert t.axis_y < m.box.y and m.box.y + m.box.h <= t.height
        assert len(m.label) <= LABEL_CHARS and len(m.detail) <= LABEL_CHARS
    for a, b in pairwise(sorted(t.marks, key=lambda m: m.at)):
        assert a.x <= b.x, "a later time is never left of an earlier one"
        if a.at < b.at:
            assert b.x - a.x >= min(MIN_GAP_PX, (t.x_max - t.x_min) / (len(t.marks) + 1)) - 1e-9
    for i, a in enumerate(t.marks):
        for b in t.marks[i + 1 :]:
            assert not a.box.overlaps(b.box), (a.label, b.label)


def test_the_seeds_words_retry_1_in_2_minutes_retry_2_in_6_minutes() -> None:
    failed = attempt(1, NOW - timedelta(seconds=5))
    plan = [
        planned(2, NOW + timedelta(minutes=2), 125.0),
        planned(3, NOW + timedelta(minutes=6), 240.0),
    ]
    t = build_timeline([failed], plan, NOW)
    labels = [m.label for m in t.marks]
    assert labels == ["Attempt 1 failed", "Retry 1 in 2 minutes", "Retry 2 in 6 minutes"]
    assert t.marks[0].detail == "lock_contention · 5 seconds ago"
    assert t.marks[0].href == f"http://127.0.0.1:16686/trace/{'ab' * 16}"
    assert t.marks[0].state == "failed" and not t.marks[0].planned
    assert [m.state for m in t.marks[1:]] == ["planned", "planned"]
    assert t.marks[1].detail == "tiers 2 m → 5 s"
    assert t.marks[2].detail == "tiers 2 m x2"
    assert "12 ms late" in t.marks[0].title and "lock timeout" in t.marks[0].title
    assert t.marks[0].x < t.now_x < t.marks[1].x < t.marks[2].x
    check_drawing(t)


def test_an_overdue_retry_and_a_pending_first_attempt() -> None:
    t = build_timeline(
        [attempt(1, NOW - timedelta(seconds=30))],
        [planned(2, NOW - timedelta(seconds=3), 27.0)],
        NOW,
    )
    assert t.marks[1].label == "Retry 1 due 3 seconds ago" and t.marks[1].state == "overdue"
    first = PlannedAttempt(attempt=1, at=NOW + timedelta(hours=2), delay_s=0.0, tiers=[])
    t = build_timeline([], [first], NOW, scheduled_at=NOW + timedelta(hours=2))
    assert t.marks[0].label == "Attempt 1 in 2 hours" and t.marks[0].detail == "first attempt"
    check_drawing(t)


def test_a_terminal_schedule_has_no_plan_and_now_after_the_last_attempt() -> None:
    t = build_timeline(
        [attempt(1, NOW - timedelta(days=3)), attempt(2, NOW - timedelta(days=2), "applied")],
        [],
        NOW,
    )
    assert [m.state for m in t.marks] == ["failed", "applied"]
    assert t.now_x == t.x_max and t.marks[0].x == t.x_min
    assert t.marks[1].detail == "2 days ago"


def test_only_the_newest_and_next_attempts_are_drawn() -> None:
    past = [attempt(n, NOW - timedelta(seconds=100 - n)) for n in range(1, 31)]
    plan = [planned(n, NOW + timedelta(seconds=n), 1.0) for n in range(31, 50)]
    t = build_timeline(past, plan, NOW)
    assert (t.hidden_past, t.hidden_planned) == (30 - MAX_PAST, 19 - MAX_PLANNED)
    assert [m.attempt for m in t.marks] == list(range(11, 41))
    check_drawing(t)


def test_close_labels_go_to_other_lanes() -> None:
    # A month-old first attempt squeezes the next retries, a second apart, together.
    plan = [planned(n, NOW + timedelta(seconds=n), 1.0) for n in range(2, 6)]
    t = build_timeline([attempt(1, NOW - timedelta(days=30))], plan, NOW)
    lanes = [m.lane for m in t.marks[1:]]
    assert all(a != b for a, b in pairwise(lanes)), lanes
    assert max(lanes) >= 1 and t.height > 62 + 40 * max(lanes)
    check_drawing(t)


def test_a_drawing_narrower_than_a_label_is_refused() -> None:
    with pytest.raises(ValueError, match="width"):
        build_timeline([], [], NOW, width=MIN_WIDTH_PX - 1)


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (1, "1 second"),
        (45, "45 seconds"),
        (58, "1 minute"),
        (125, "2 minutes"),
        (360, "6 minutes"),
        (3600, "1 hour"),
        (5 * 3600, "5 hours"),
        (2 * 86400, "2 days"),
        (0.2, "1 second"),
    ],
)
def test_humanize(seconds: float, words: str) -> None:
    assert humanize_s(seconds) == words
    assert humanize_s(-seconds) == words


def test_relative_and_tier_path() -> None:
    assert relative(NOW, NOW + timedelta(milliseconds=300)) == "now"
    assert relative(NOW + timedelta(minutes=2), NOW) == "in 2 minutes"
    assert relative(NOW - timedelta(hours=3), NOW) == "3 hours ago"
    assert tier_path([3600.0, 3600.0, 600.0, 30.0, 1.5]) == "1 h x2 → 10 m → 30 s → 1.5 s"
    assert tier_path([]) == ""


offsets = st.floats(min_value=-30 * 86400, max_value=30 * 86400, allow_nan=False)


@st.composite
def timelines(draw: st.DrawFn) -> tuple[list[Attempt], list[PlannedAttempt], float]:
    past_at = sorted(draw(st.lists(offsets, max_size=25)))
    past = [
        attempt(i + 1, NOW + timedelta(seconds=s), draw(st.sampled_from(OUTCOMES)))
        for i, s in enumerate(past_at)
    ]
    plan_at = sorted(draw(st.lists(offsets, max_size=15)))
    plan = [
        planned(len(past) + i + 1, NOW + timedelta(seconds=s), abs(s))
        for i, s in enumerate(plan_at)
    ]
    width = draw(st.floats(min_value=MIN_WIDTH_PX, max_value=2000))
    return past, plan, width


@given(timelines())
def test_any_drawing_keeps_its_rules(
    case: tuple[list[Attempt], list[PlannedAttempt], float],
) -> None:
    past, plan, width = case
    t = build_timeline(past, plan, NOW, scheduled_at=NOW - timedelta(minutes=1), width=width)
    check_drawing(t)
    assert len(t.marks) == min(len(past), MAX_PAST) + min(len(plan), MAX_PLANNED)
    assert t.hidden_past + t.hidden_planned + len(t.marks) == len(past) + len(plan)


@given(
    st.integers(min_value=1, max_value=10**6),
    st.integers(min_value=0, max_value=12),
    st.sampled_from(["none", "full", "equal", "decorrelated"]),
)
def test_a_real_preview_is_drawn_in_attempt_order(
    schedule_id: int, max_retries: int, jitter: str
) -> None:
    policy = RetryPolicy.model_validate(
        {
            "max_retries": max_retries,
            "base_s": 2,
            "multiplier": 2,
            "cap_s": 600,
            "floor_s": 0,
            "jitter": jitter,
        }
    )
    failed = attempt(1, NOW - timedelta(seconds=1))
    plan = preview(policy, schedule_id, failed.finished_at, LADDER)
    t = build_timeline([failed], plan, NOW)
    check_drawing(t)
    drawn = [m.attempt for m in t.marks]
    assert drawn == sorted(drawn) and drawn[0] == 1
    assert all(m.label.startswith(f"Retry {m.attempt - 1} ") for m in t.marks[1:])
