"""Pre-dispatch: schedules due within the look-ahead window are in Kafka before they
are due, are never applied early, and an edit after pre-dispatch wins."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.support.pipeline import (
    add_flag,
    add_schedule,
    attempts,
    running_dispatcher,
    running_worker,
    schedule,
    seconds_from_now,
    status_is,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def ahead(make_settings):
    return make_settings(dispatch_lookahead_s=20.0)


def test_pre_dispatched_schedule_is_applied_on_time_never_early(ahead, db):
    add_flag(db, "midnight")
    sid = add_schedule(db, "midnight", {"enabled": True}, at=seconds_from_now(4))
    with running_worker(ahead), running_dispatcher(ahead):
        wait_until(lambda: status_is(db, sid, "dispatched"), what="pre-dispatched")
        row = schedule(db, sid)
        assert row["dispatched_at"] < row["scheduled_at"] - timedelta(seconds=2)
        wait_until(lambda: status_is(db, sid, "applied"), what="applied", timeout_s=20)
    [a] = attempts(db, sid)
    assert a["started_at"] >= row["scheduled_at"]
    assert 0 <= a["lateness_ms"] < 500
    assert ".retry." in a["topic"]  # it waited in the delay tiers, not in the database


def test_update_edited_after_pre_dispatch_is_what_gets_applied(ahead, db):
    add_flag(db, "promo")
    sid = add_schedule(db, "promo", {"enabled": True}, at=seconds_from_now(4))
    with running_worker(ahead), running_dispatcher(ahead):
        wait_until(lambda: status_is(db, sid, "dispatched"), what="pre-dispatched")
        db.execute(
            "UPDATE flag_schedules SET updates = '{\"rollout_percentage\": 40}' WHERE id = %s",
            (sid,),
        )
        wait_until(lambda: status_is(db, sid, "applied"), what="applied", timeout_s=20)
    flag = db.execute("SELECT * FROM feature_flags WHERE key = 'promo'").fetchone()
    assert (flag["enabled"], flag["rollout_percentage"]) == (False, 40)


@pytest.mark.parametrize(("first_s", "moved_s"), [(3.0, 6.0), (8.0, 3.0)])
def test_due_time_moved_after_pre_dispatch_applies_at_the_new_time_once(
    ahead, db, first_s, moved_s
):
    add_flag(db, "moved")
    sid = add_schedule(db, "moved", {"enabled": True}, at=seconds_from_now(first_s))
    with running_worker(ahead), running_dispatcher(ahead):
        wait_until(lambda: status_is(db, sid, "dispatched"), what="pre-dispatched")
        new_at = seconds_from_now(moved_s)
        db.execute("UPDATE flag_schedules SET scheduled_at = %s WHERE id = %s", (new_at, sid))
        assert schedule(db, sid)["status"] in ("pending", "dispatched")  # re-armed
        wait_until(lambda: status_is(db, sid, "applied"), what="applied", timeout_s=20)
        if first_s > moved_s:  # the old wake-up must not apply it a second time
            wait_until(
                lambda: (
                    schedule(db, sid)["scheduled_at"] + timedelta(seconds=first_s - moved_s + 1)
                    < seconds_from_now(0)
                ),
                what="old due time passed",
                timeout_s=20,
            )
    [a] = attempts(db, sid)
    assert a["started_at"] >= new_at
    assert a["lateness_ms"] < 500
    assert db.execute("SELECT count(*) AS n FROM flag_change_log").fetchone()["n"] == 1


def test_a_pre_dispatched_burst_is_all_applied_on_time(make_settings, db, dsn):
    """Thousands of schedules due at one instant, pre-dispatched into the tiers: every one
    is applied, none early, none stuck in a tier partition (kafka_compat.resume)."""
    settings = make_settings(dispatch_lookahead_s=30.0, tier_partitions=3, max_poll_records=500)
    for i in range(100):
        add_flag(db, f"b{i}")
    at = seconds_from_now(5)
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO flag_schedules (flag_key, updates, scheduled_at) VALUES (%s, %s, %s)",
            [(f"b{i % 100}", f'{{"rollout_percentage": {i % 101}}}', at) for i in range(2000)],
        )
    with running_worker(settings), running_dispatcher(settings):
        wait_until(
            lambda: (
                db.execute(
                    "SELECT count(*) AS n FROM flag_schedules"
                    " WHERE status IN ('applied', 'superseded')"
                ).fetchone()["n"]
                == 2000
            ),
            what="every schedule final",
            timeout_s=60,
        )
    late = db.execute(
        "SELECT min(lateness_ms) AS lo, max(started_at) - %s AS span FROM schedule_retry_attempts",
        (at,),
    ).fetchone()
    assert late["lo"] >= 0
    print(f"burst of 2000: last attempt started {late['span']} after the due instant")
