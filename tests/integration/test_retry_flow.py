"""Retries through the delay tiers: never early, supersede, cancel, and a killed worker."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

import pytest

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
    settings_env,
    status_is,
    wait_until,
)

pytestmark = pytest.mark.integration


def first_failure(db: Any, sid: int) -> dict[str, Any]:
    rows = wait_until(lambda: attempts(db, sid), what="attempt 1 recorded")
    assert rows[0]["outcome"] == "retry"
    return rows[0]


def test_tier_hops_are_never_early(settings, db, dsn):
    add_flag(db, "hops")
    # jitter none (the lock_contention class jitters "equal"): exactly 3.85 s
    sid = add_schedule(
        db, "hops", {"enabled": True}, retry_policy={"base_s": 3.85, "jitter": "none"}
    )
    _, release = hold_flag_lock(dsn, "hops")
    with running_worker(settings), running_dispatcher(settings):
        failed = first_failure(db, sid)
        release()
        wait_until(lambda: status_is(db, sid, "applied"), what="applied on retry")
    second = attempts(db, sid)[1]
    assert second["started_at"] >= failed["next_attempt_at"]
    assert 0 <= second["lateness_ms"] < 1000
    layout = settings.topic_layout()
    # 3.85 s = a 2 s tier, then hops to 1 s and 0.5 s, then a hold for the rest (tier
    # records wake at the broker's append time plus the tier: a hop starts a little
    # after its record was sent, so the last hop keeps ~0.2 s of margin above 0.5 s)
    for tier in (2.0, 1.0, 0.5):
        [rec] = read_topic(settings, layout.tier_topic(tier), expect=1)
        assert dict(rec.headers)["flagsched-attempt"] == b"2"


def test_stale_retry_is_superseded_by_a_newer_change(settings, db, dsn):
    add_flag(db, "promo")
    older = add_schedule(
        db, "promo", {"enabled": True}, at=seconds_from_now(-1), retry_policy={"base_s": 3.0}
    )
    _, release = hold_flag_lock(dsn, "promo")
    with running_worker(settings), running_dispatcher(settings):
        first_failure(db, older)
        release()
        newer = add_schedule(db, "promo", {"enabled": False, "rollout_percentage": 5})
        wait_until(lambda: status_is(db, newer, "applied"), what="newer applied")
        wait_until(lambda: status_is(db, older, "superseded"), what="older superseded")
    row = schedule(db, older)
    assert row["superseded_by"] == newer
    flag = db.execute("SELECT * FROM feature_flags WHERE key = 'promo'").fetchone()
    assert (flag["enabled"], flag["rollout_percentage"]) == (False, 5)
    changes = db.execute("SELECT schedule_id FROM flag_change_log").fetchall()
    assert [c["schedule_id"] for c in changes] == [newer]
    layout = settings.topic_layout()
    types = {json.loads(r.value)["type"] for r in read_topic(settings, layout.lifecycle, expect=3)}
    assert types == {"retry_scheduled", "applied", "superseded"}


def test_a_stale_retry_still_sets_the_fields_no_newer_change_set(settings, db, dsn):
    """Per-field ordering: the flag ends as if its schedules had applied in due order."""
    add_flag(db, "promo")
    older = add_schedule(
        db,
        "promo",
        {"enabled": True, "rollout_percentage": 10},
        at=seconds_from_now(-1),
        retry_policy={"base_s": 3.0},
    )
    _, release = hold_flag_lock(dsn, "promo")
    with running_worker(settings), running_dispatcher(settings):
        first_failure(db, older)
        release()
        newer = add_schedule(db, "promo", {"rollout_percentage": 50})
        wait_until(lambda: status_is(db, newer, "applied"), what="newer applied")
        wait_until(lambda: status_is(db, older, "applied"), what="older applied late")
    flag = db.execute("SELECT * FROM feature_flags WHERE key = 'promo'").fetchone()
    # the older schedule's enabled=true arrives; its rollout (10) does not undo the newer 50
    assert (flag["enabled"], flag["rollout_percentage"]) == (True, 50)
    assert flag["last_schedule_id"] == newer
    log = db.execute(
        "SELECT schedule_id, version, after FROM flag_change_log ORDER BY version"
    ).fetchall()
    assert [r["schedule_id"] for r in log] == [newer, older]
    assert log[-1]["after"] == {"enabled": True, "rollout_percentage": 50, "config": {}}
    assert [a["outcome"] for a in attempts(db, older)] == ["retry", "applied"]


def test_cancelled_schedule_drops_its_in_flight_retry(settings, db, dsn):
    add_flag(db, "gone")
    sid = add_schedule(db, "gone", {"enabled": True}, retry_policy={"base_s": 2.0})
    _, release = hold_flag_lock(dsn, "gone")
    with running_worker(settings), running_dispatcher(settings):
        first_failure(db, sid)
        db.execute("UPDATE flag_schedules SET status = 'cancelled' WHERE id = %s", (sid,))
        release()
        wait_until(lambda: len(attempts(db, sid)) == 2, what="retry arrives")
    assert [a["outcome"] for a in attempts(db, sid)] == ["retry", "cancelled"]
    assert db.execute("SELECT version FROM feature_flags").fetchone()["version"] == 1
    layout = settings.topic_layout()
    events = [json.loads(r.value) for r in read_topic(settings, layout.lifecycle, expect=2)]
    assert [e["type"] for e in events] == ["retry_scheduled", "cancelled"]


def test_killed_worker_retry_still_runs_on_time_elsewhere(settings, db, dsn):
    add_flag(db, "holiday")
    sid = add_schedule(db, "holiday", {"enabled": True}, retry_policy={"base_s": 9.0})
    _, release = hold_flag_lock(dsn, "holiday")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flagsched.cli", "worker"],
        env=settings_env(settings) | {"FLAGSCHED_WORKER_ID": "doomed"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with running_dispatcher(settings):
            failed = first_failure(db, sid)
            assert failed["worker"] == "doomed"
            release()
            # A real crash: no leave-group, maybe in the middle of its Kafka transaction
            # (then the survivor replays attempt 1's side effects from the database).
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            with running_worker(settings, worker_id="survivor"):
                wait_until(
                    lambda: status_is(db, sid, "applied"), what="retry applied", timeout_s=30
                )
    finally:
        if proc.poll() is None:
            proc.kill()
    second = attempts(db, sid)[1]
    assert second["worker"] == "survivor"
    assert second["started_at"] >= failed["next_attempt_at"]
    assert second["lateness_ms"] < 1000


def test_held_retries_survive_a_rebalance_on_time(settings, db, dsn):
    """kafka-python keeps a partition's paused flag across a rebalance: the holds must be
    re-derived, or a partition the worker keeps stays paused for ever."""
    keys = [f"rb{i}" for i in range(8)]
    for key in keys:
        add_flag(db, key)
    sids = [add_schedule(db, k, {"enabled": True}, retry_policy={"base_s": 5.0}) for k in keys]
    releases = [hold_flag_lock(dsn, k)[1] for k in keys]
    with running_worker(settings, worker_id="first"), running_dispatcher(settings):
        for sid in sids:
            first_failure(db, sid)
        for release in releases:
            release()
        # every retry now waits, held, in a tier partition; a second worker joins
        with running_worker(settings, worker_id="second"):
            wait_until(
                lambda: all(status_is(db, s, "applied") for s in sids),
                what="every retry applied",
                timeout_s=30,
            )
    for sid in sids:
        failed, second = attempts(db, sid)
        assert second["started_at"] >= failed["next_attempt_at"]
        assert second["lateness_ms"] < 1500, (sid, second["lateness_ms"], second["worker"])
