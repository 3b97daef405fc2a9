"""Migration 0005: the CHECKs refuse a live schedule row that the contract's models
refuse, accept what they accept, and leave finished rows alone."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from pydantic import ValidationError

from flagsched.schemas.events import ScheduleDue
from flagsched.schemas.retry.policy import PolicyOverride
from flagsched.schemas.updates import MAX_UPDATE_DEPTH, FlagUpdate, json_depth

pytestmark = pytest.mark.integration


def nested(levels: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"enabled": True}
    node = doc
    for _ in range(levels - 1):
        node["config"] = {}
        node = node["config"]
    return doc


def nested_json(levels: int) -> str:
    """``nested(levels)`` as JSON text (json.dumps cannot write 5,000 levels)."""
    return '{"enabled": true, "config": ' * (levels - 1) + '{"enabled": true' + "}" * levels


def insert(
    db: Any,
    *,
    key: str = "k",
    updates: Any = None,
    policy: Any = None,
    status: str = "pending",
    at: str = "now()",
) -> None:
    db.execute(
        "INSERT INTO flag_schedules (flag_key, updates, retry_policy, status, scheduled_at)"
        f" VALUES (%s, %s, %s, %s, {at})",
        (
            key,
            updates if isinstance(updates, str) else json.dumps(updates or {"enabled": True}),
            None if policy is None else json.dumps(policy),
            status,
        ),
    )


def refused(db: Any, **row: Any) -> bool:
    try:
        with db.transaction():
            insert(db, **row)
    except psycopg.errors.CheckViolation:
        return True
    return False


def model_refuses(model: Any, value: Any) -> bool:
    try:
        model.model_validate(value)
    except (ValidationError, ValueError):
        return True
    return False


KEYS = ["promo.2024:eu-1", "", "has space", "line\nbreak", "x" * 200, "x" * 201, "ünï"]


@pytest.mark.parametrize("key", KEYS)
def test_the_flag_key_check_is_the_flag_key_pattern(db, key):
    def model_refuses_key() -> bool:
        try:
            ScheduleDue(
                schedule_id=1,
                flag_key=key,
                scheduled_at="2030-01-01T00:00:00Z",
                dispatched_at="2030-01-01T00:00:00Z",
            )
        except ValidationError:
            return True
        return False

    assert refused(db, key=key) == model_refuses_key()


POLICIES = [
    {},
    {"max_retries": 3, "base_s": 0.5, "multiplier": 2, "cap_s": 60, "floor_s": 0, "jitter": "full"},
    {"cap_s": None},
    {"max_retriez": 2},
    {"max_retries": -1},
    {"max_retries": 2.5},
    {"max_retries": 2.0},
    {"max_retries": True},
    {"base_s": 0},
    {"base_s": "1"},
    {"multiplier": 0.5},
    {"floor_s": -1},
    {"cap_s": 3_000_000},
    {"jitter": "some"},
    {"max_retry_duration_s": 300, "max_retries": 100},
    {"max_retry_duration_s": 0},
    {"max_retry_duration_s": "60"},
    {"max_retry_duration_s": 3_000_000},
    {"max_retries": 10_000},
    {"max_retries": 10_001},
    [1],
]


@pytest.mark.parametrize("policy", POLICIES, ids=[json.dumps(p) for p in POLICIES])
def test_the_retry_policy_check_is_the_policy_override_shape(db, policy):
    assert refused(db, policy=policy) == model_refuses(PolicyOverride, policy)


@pytest.mark.parametrize("levels", [1, MAX_UPDATE_DEPTH, MAX_UPDATE_DEPTH + 1, 5000])
def test_the_depth_check_is_the_update_models_bound(db, levels):
    doc, text = nested(levels), nested_json(levels)
    assert json_depth(doc) == levels
    depth = db.execute("SELECT flagsched_jsonb_depth(%s::jsonb, 32) AS d", (text,)).fetchone()["d"]
    assert depth == min(levels, MAX_UPDATE_DEPTH + 1)
    over = levels > MAX_UPDATE_DEPTH
    assert refused(db, updates=text) == model_refuses(FlagUpdate, doc) == over


def test_size_and_time_are_bounded_and_finished_rows_are_exempt(db):
    big = {"config": {"v": "x" * 70_000}}
    assert refused(db, updates=big) and model_refuses(FlagUpdate, big)
    assert refused(db, at="'infinity'")
    assert not refused(db, key="bad key", status="dead")  # history is left as it was
    checks = db.execute(
        "SELECT conname, convalidated FROM pg_constraint WHERE conname LIKE 'flag_schedules_%'"
        " AND contype = 'c' AND NOT convalidated"
    ).fetchall()
    assert {c["conname"] for c in checks} == {
        "flag_schedules_flag_key_pattern",
        "flag_schedules_scheduled_at_finite",
        "flag_schedules_updates_bounded",
        "flag_schedules_retry_policy_shape",
    }
