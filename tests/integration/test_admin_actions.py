"""The admin API end to end on a real uvicorn server, with a real dispatcher, workers,
Kafka and PostgreSQL: create, cancel, manual retry, redrive, idempotent replays."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flagsched.consumer.results import Outcome
from tests.support.admin import running_admin
from tests.support.pipeline import (
    add_flag,
    add_schedule,
    attempts,
    hold_flag_lock,
    read_topic,
    running_dispatcher,
    running_worker,
    schedule,
    seconds_from_now,
    status_is,
    wait_until,
)

pytestmark = pytest.mark.integration


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _lifecycle(settings: Any, expect: int, timeout_s: float = 10) -> list[dict[str, Any]]:
    records = read_topic(
        settings, settings.topic_layout().lifecycle, expect=expect, timeout_s=timeout_s
    )
    return [json.loads(r.value) for r in records]


def _fail_first_attempt(db: Any, dsn: str, flag: str, sid: int) -> None:
    """Hold the flag's row lock until attempt 1 failed (a real lock_contention)."""
    _, release = hold_flag_lock(dsn, flag)
    try:
        wait_until(lambda: attempts(db, sid), what="attempt 1 recorded")
    finally:
        release()


def test_create_then_applied_on_time(settings, db, tmp_path):
    add_flag(db, "launch")
    with (
        running_admin(settings, tmp_path) as api,
        api.client("operator") as client,
        running_worker(settings),
        running_dispatcher(settings),
    ):
        due = seconds_from_now(2.0)
        created = client.post(
            "/api/admin/flags/launch/schedules",
            json={
                "updates": {"enabled": True, "rollout_percentage": 25},
                "scheduled_at": _iso(due),
            },
        )
        assert created.status_code == 201, created.text
        body = created.json()
        sid = body["schedule"]["id"]
        assert created.headers["location"] == f"/api/admin/flags/launch/schedules/{sid}"
        assert body["scheduled_in_past"] is False
        assert body["schedule"]["scheduled_at"].endswith("Z")
        wait_until(lambda: status_is(db, sid, "applied"), what="applied")
        shown = client.get(created.headers["location"]).json()
    [attempt] = shown["attempts"]
    assert attempt["outcome"] == "applied"
    assert 0 <= attempt["lateness_ms"] < 1000  # on time, never early
    assert shown["plan"] == []
    flag = db.execute("SELECT * FROM feature_flags WHERE key = 'launch'").fetchone()
    assert (flag["enabled"], flag["rollout_percentage"]) == (True, 25)


def test_a_past_time_means_now_and_conflicts_are_named(settings, db, tmp_path):
    add_flag(db, "promo")
    other = add_schedule(
        db, "promo", {"enabled": False, "config": {"a": 1}}, at=seconds_from_now(600)
    )
    add_schedule(db, "promo", {"rollout_percentage": 5}, at=seconds_from_now(600))  # other fields
    with running_admin(settings, tmp_path) as api, api.client("operator") as client:
        before = datetime.now(UTC)
        past = client.post(
            "/api/admin/flags/promo/schedules",
            json={"updates": {"enabled": True}, "scheduled_at": "2020-01-01T00:00:00+02:00"},
        ).json()
        near = client.post(
            "/api/admin/flags/promo/schedules",
            json={
                "updates": {"enabled": True, "config": {"b": 2}},
                "scheduled_at": _iso(seconds_from_now(900)),
            },
        ).json()
    assert past["scheduled_in_past"] is True
    assert past["requested_scheduled_at"] == "2019-12-31T22:00:00Z"
    assert datetime.fromisoformat(past["schedule"]["scheduled_at"]) >= before
    # in due order: the one just created (now) and the one in 10 minutes; not the third
    assert [(c["schedule_id"], c["fields"]) for c in near["conflicts"]] == [
        (past["schedule"]["id"], ["enabled"]),
        (other, ["config", "enabled"]),
    ]


def test_cancel_of_a_retry_waiting_in_the_30s_tier_publishes_one_event_within_1s(
    make_settings, db, dsn, tmp_path
):
    settings = make_settings(retry_tiers_s=(0.5, 1.0, 2.0, 30.0))
    add_flag(db, "slow")
    sid = add_schedule(
        db,
        "slow",
        {"enabled": True},
        retry_policy={"base_s": 40.0, "cap_s": 40.0, "jitter": "none"},
    )
    with (
        running_admin(settings, tmp_path) as api,
        api.client("operator") as client,
        running_worker(settings),
        running_dispatcher(settings),
    ):
        _fail_first_attempt(db, dsn, "slow", sid)
        wait_until(lambda: status_is(db, sid, "retrying"), what="retrying")
        tier = settings.topic_layout().tier_topic(30.0)
        read_topic(settings, tier, expect=1)  # the retry waits in the 30 s tier
        began = time.monotonic()
        cancelled = client.post(f"/api/admin/flags/slow/schedules/{sid}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        events = _lifecycle(settings, expect=2, timeout_s=1.0)
        assert time.monotonic() - began < 1.0
        again = client.delete(f"/api/admin/flags/slow/schedules/{sid}")
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert [e["type"] for e in events] == ["retry_scheduled", "cancelled"]
    assert events[1]["schedule_id"] == sid and events[1]["attempt"] == 2
    assert schedule(db, sid)["status"] == "cancelled"


def test_a_cancelled_schedule_waiting_wake_up_is_dropped_as_stale(settings, db, dsn, tmp_path):
    add_flag(db, "stale")
    sid = add_schedule(
        db, "stale", {"enabled": True}, retry_policy={"base_s": 2.5, "cap_s": 2.5, "jitter": "none"}
    )
    results: list[Any] = []
    with (
        running_admin(settings, tmp_path) as api,
        api.client("operator") as client,
        running_worker(settings, on_result=lambda r, _c: results.append(r)),
        running_dispatcher(settings),
    ):
        _fail_first_attempt(db, dsn, "stale", sid)
        wait_until(lambda: status_is(db, sid, "retrying"), what="retrying")
        # The row says retrying once the worker's database transaction commits; its
        # retry_scheduled event commits with its Kafka transaction just after.
        _lifecycle(settings, expect=1)
        assert client.post(f"/api/admin/flags/stale/schedules/{sid}/cancel").status_code == 200
        # The wake-up of attempt 2 comes due 2.5 s after the failure: the worker drops it.
        wait_until(
            lambda: any(r.outcome is Outcome.DROP and r.attempt == 2 for r in results),
            timeout_s=15,
            what="the stale wake-up dropped",
        )
    events = _lifecycle(settings, expect=2)
    assert [e["type"] for e in events] == ["retry_scheduled", "cancelled"]
    assert [a["outcome"] for a in attempts(db, sid)] == ["retry", "cancelled"]
    assert db.execute("SELECT count(*) AS n FROM flag_change_log").fetchone()["n"] == 0


def test_manual_retry_of_a_retrying_schedule_runs_within_1s(settings, db, dsn, tmp_path):
    add_flag(db, "later")
    sid = add_schedule(
        db,
        "later",
        {"enabled": True},
        retry_policy={"base_s": 60.0, "cap_s": 60.0, "jitter": "none"},
    )
    with (
        running_admin(settings, tmp_path) as api,
        api.client("operator") as client,
        running_worker(settings),
        running_dispatcher(settings),
    ):
        _fail_first_attempt(db, dsn, "later", sid)
        wait_until(lambda: status_is(db, sid, "retrying"), what="retrying")
        shown = client.get(f"/api/admin/flags/later/schedules/{sid}").json()
        assert shown["plan"][0]["attempt"] == 2  # the plan while retrying: the worker's own
        assert datetime.fromisoformat(shown["plan"][0]["at"]) == schedule(db, sid)["next_retry_at"]
        called = datetime.now(UTC)
        retried = client.post(f"/api/admin/flags/later/schedules/{sid}/retry")
        assert retried.status_code == 200, retried.text
        assert retried.json()["action"] == "run_now" and retried.json()["attempt"] == 2
        wait_until(lambda: status_is(db, sid, "applied"), timeout_s=1.0, what="applied within 1 s")
    second = attempts(db, sid)[1]
    assert second["outcome"] == "applied"
    assert second["started_at"] - called < timedelta(seconds=1)


def test_retry_of_a_dead_schedule_applies_once_and_a_replay_has_no_second_effect(
    settings, db, dsn, tmp_path
):
    add_flag(db, "dead")
    sid = add_schedule(db, "dead", {"enabled": True}, max_retries=0)
    with (
        running_admin(settings, tmp_path) as api,
        api.client("operator", **{"Idempotency-Key": "retry-1"}) as client,
        running_worker(settings),
        running_dispatcher(settings),
    ):
        _fail_first_attempt(db, dsn, "dead", sid)
        wait_until(lambda: status_is(db, sid, "dead"), what="dead (exhausted)")
        first = client.post(f"/api/admin/flags/dead/schedules/{sid}/retry")
        assert first.status_code == 200, first.text
        assert first.json()["action"] == "reopened"
        assert first.json()["attempt"] == 2 and first.json()["max_retries"] == 1
        wait_until(lambda: status_is(db, sid, "applied"), what="applied on the manual retry")
        replay = client.post(f"/api/admin/flags/dead/schedules/{sid}/retry")
    assert replay.status_code == 200 and replay.json() == first.json()
    assert replay.headers["idempotent-replayed"] == "true"
    assert [a["outcome"] for a in attempts(db, sid)] == ["dead", "applied"]
    assert db.execute("SELECT count(*) AS n FROM flag_change_log").fetchone()["n"] == 1
    audits = db.execute("SELECT * FROM admin_audit WHERE action = 'schedule.retry'").fetchall()
    assert len(audits) == 1 and audits[0]["idempotency_key"] == "retry-1"


def test_idempotent_create_replays_and_refuses_another_body(settings, db, tmp_path):
    add_flag(db, "idem")
    body = {"updates": {"enabled": True}, "scheduled_at": _iso(seconds_from_now(600))}
    with (
        running_admin(settings, tmp_path) as api,
        api.client("operator", **{"Idempotency-Key": "k1"}) as client,
    ):
        first = client.post("/api/admin/flags/idem/schedules", json=body)
        second = client.post("/api/admin/flags/idem/schedules", json=body)
        other = client.post("/api/admin/flags/idem/schedules", json=body | {"priority": "critical"})
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["location"] == first.headers["location"]
    assert other.status_code == 422
    assert other.json()["type"] == "urn:flagsched:problem:idempotency-key-reused"
    assert db.execute("SELECT count(*) AS n FROM flag_schedules").fetchone()["n"] == 1
    assert db.execute("SELECT count(*) AS n FROM admin_audit").fetchone()["n"] == 1


def test_edit_moves_a_dispatched_schedule_and_it_applies_at_the_new_time(settings, db, tmp_path):
    add_flag(db, "moved")
    with (
        running_admin(settings, tmp_path) as api,
        api.client("operator") as client,
        running_worker(settings),
        running_dispatcher(settings),
    ):
        sid = add_schedule(db, "moved", {"enabled": True}, at=seconds_from_now(20))
        wait_until(lambda: status_is(db, sid, "dispatched"), what="pre-dispatched")
        new_at = seconds_from_now(1.5)
        edited = client.patch(
            f"/api/admin/flags/moved/schedules/{sid}",
            json={"scheduled_at": _iso(new_at), "updates": {"rollout_percentage": 40}},
        )
        assert edited.status_code == 200, edited.text
        assert edited.json()["status"] == "pending"  # re-armed (migration 0002)
        wait_until(lambda: status_is(db, sid, "applied"), what="applied")
    [attempt] = attempts(db, sid)
    # the wake-up's due time is the new one (to the millisecond of its header)
    assert abs(attempt["due_at"] - schedule(db, sid)["scheduled_at"]) < timedelta(milliseconds=1)
    flag = db.execute("SELECT * FROM feature_flags WHERE key = 'moved'").fetchone()
    assert (flag["enabled"], flag["rollout_percentage"]) == (False, 40)
