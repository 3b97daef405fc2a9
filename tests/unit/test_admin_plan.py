"""The plan the admin shows for a retrying schedule stops where the worker stops: by
count, and by the time budget counted from the schedule's FIRST failure (the worker's
``first_failed_at``), not from the next retry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flagsched.admin.service.env import Env
from flagsched.admin.service.schedules_read import plan_of
from flagsched.admin.settings import AdminSettings
from flagsched.runtime.settings import Settings
from flagsched.schemas.retry.policy import is_exhausted

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _row(**over: object) -> dict[str, object]:
    return {
        "id": 42,
        "status": "retrying",
        "retry_count": 2,
        "retry_policy": {"max_retries": 50, "max_retry_duration_s": 60.0, "base_s": 5.0},
        "max_retries": None,
        "last_error_class": "transient",
        "scheduled_at": T0,
        "first_failed_at": T0,
        "next_retry_at": T0 + timedelta(seconds=40),
    } | over


def _env() -> Env:
    return Env(settings=Settings(jitter="none"), admin=AdminSettings())


def test_the_budget_is_counted_from_the_first_failure() -> None:
    env = _env()
    row = _row()
    plan = plan_of(env, row, last_finished=T0 + timedelta(seconds=30))
    policy = env.policy_of(row, "transient")
    # Every planned attempt but the last starts before the budget ends, and the last
    # one's failure is where the worker would stop.
    assert plan and plan[0].attempt == 3
    for p in plan[:-1]:
        assert not is_exhausted(policy, p.attempt, first_failed_at=T0, now=p.at)
    assert is_exhausted(policy, plan[-1].attempt, first_failed_at=T0, now=plan[-1].at)
    assert plan[-1].at - T0 < timedelta(seconds=60) + timedelta(seconds=policy.cap_s)


def test_without_a_budget_the_count_decides() -> None:
    row = _row(retry_policy={"max_retries": 5})
    plan = plan_of(_env(), row, last_finished=None)
    assert [p.attempt for p in plan] == [3, 4, 5, 6]
