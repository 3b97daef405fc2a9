"""Batched applying: a poll's schedules in one transaction (a savepoint each), one
failure rolls back only itself, a locked flag does not hold up the batch, and several
schedules of one flag apply in due order."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.integration.test_reliability import applied_count, due_records, publish
from tests.support.pipeline import (
    add_flag,
    add_schedule,
    attempts,
    hold_flag_lock,
    running_worker,
    seconds_from_now,
    status_is,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_a_poll_is_applied_in_few_transactions_with_failures_isolated(make_settings, db, dsn):
    settings = make_settings(max_poll_records=500, apply_lock_timeout_ms=300)
    for i in range(10):
        add_flag(db, f"f{i}")
    add_flag(db, "same")
    add_flag(db, "held")
    healthy = [add_schedule(db, f"f{i % 10}", {"rollout_percentage": i % 101}) for i in range(200)]
    base = seconds_from_now(-60)
    same = [
        add_schedule(db, "same", {"rollout_percentage": 10 * k}, at=base + timedelta(seconds=k))
        for k in range(5)
    ]
    bad = add_schedule(db, "f0", {"rollout_percentage": 150})  # violates a CHECK constraint
    held = add_schedule(db, "held", {"enabled": True}, max_retries=0)
    db.execute("UPDATE flag_schedules SET status = 'dispatched'")
    # the five schedules of one flag arrive newest first, in one partition
    ids = [*healthy, *reversed(same), bad, held]
    publish(settings, due_records(settings, db, ids))
    _, release = hold_flag_lock(dsn, "held")
    try:
        with running_worker(settings):
            wait_until(lambda: applied_count(dsn) == len(healthy) + len(same), what="applied")
            wait_until(
                lambda: status_is(db, bad, "dead") and status_is(db, held, "dead"),
                what="failures recorded",
            )
    finally:
        release()
    txns = db.execute(
        "SELECT count(DISTINCT db_txid) AS n FROM schedule_retry_attempts WHERE outcome = 'applied'"
    ).fetchone()["n"]
    print(f"{len(healthy) + len(same)} schedules applied in {txns} transactions")
    assert txns <= 10, txns  # one per poll, not one per schedule
    assert attempts(db, bad)[0]["error_class"] == "constraint_violation"
    assert attempts(db, held)[0]["error_class"] == "lock_contention"
    # in due order: none of the older ones was superseded by a newer one in the batch
    versions = [
        r["schedule_id"]
        for r in db.execute(
            "SELECT schedule_id FROM flag_change_log WHERE flag_key = 'same' ORDER BY version"
        )
    ]
    assert versions == same
    flag = db.execute("SELECT rollout_percentage FROM feature_flags WHERE key = 'same'")
    assert flag.fetchone()["rollout_percentage"] == 40


def _count_flag_updates(db: object) -> None:
    """A real trigger counts the UPDATE statements that reach each flag row."""
    db.execute(  # type: ignore[attr-defined]
        "CREATE TABLE flag_updates (key text NOT NULL);"
        " CREATE FUNCTION count_flag_update() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN INSERT INTO flag_updates VALUES (NEW.key); RETURN NEW; END $$;"
        " CREATE TRIGGER count_flag_update AFTER UPDATE ON feature_flags"
        " FOR EACH ROW EXECUTE FUNCTION count_flag_update()"
    )


def test_one_flags_schedules_in_a_poll_fold_into_one_update(make_settings, db, dsn):
    settings = make_settings(max_poll_records=500)
    add_flag(db, "fold")
    add_flag(db, "single")
    _count_flag_updates(db)
    base = seconds_from_now(-60)
    fold = [
        add_schedule(db, "fold", {"rollout_percentage": 10 * k}, at=base + timedelta(seconds=k))
        for k in range(1, 6)
    ]
    fold.append(add_schedule(db, "fold", {"config": {"k": 1}}, at=base + timedelta(seconds=10)))
    single = add_schedule(db, "single", {"enabled": True})
    db.execute("UPDATE flag_schedules SET status = 'dispatched'")
    publish(settings, due_records(settings, db, [*reversed(fold), single]))
    with running_worker(settings):
        wait_until(lambda: applied_count(dsn) == len(fold) + 1, what="applied")
    updates = {
        r["key"]: r["n"]
        for r in db.execute("SELECT key, count(*) AS n FROM flag_updates GROUP BY key")
    }
    assert updates == {"fold": 1, "single": 1}, updates
    log = db.execute(
        "SELECT schedule_id, version, before, after FROM flag_change_log"
        " WHERE flag_key = 'fold' ORDER BY version"
    ).fetchall()
    assert [r["schedule_id"] for r in log] == fold
    assert [r["version"] for r in log] == list(range(2, 2 + len(fold)))
    # each entry shows the flag as the schedules before it left it
    assert [r["after"]["rollout_percentage"] for r in log] == [10, 20, 30, 40, 50, 50]
    assert [r["before"]["rollout_percentage"] for r in log] == [0, 10, 20, 30, 40, 50]
    assert log[-1]["after"]["config"] == {"k": 1}
    flag = db.execute("SELECT * FROM feature_flags WHERE key = 'fold'").fetchone()
    assert (flag["rollout_percentage"], flag["config"], flag["version"]) == (50, {"k": 1}, 7)
    assert flag["last_schedule_id"] == fold[-1]
    rows = db.execute(
        "SELECT schedule_id, attempt, outcome FROM schedule_retry_attempts ORDER BY schedule_id"
    ).fetchall()
    assert [(r["attempt"], r["outcome"]) for r in rows] == [(1, "applied")] * (len(fold) + 1)


def test_a_folded_change_that_breaks_a_constraint_fails_alone(make_settings, db, dsn):
    settings = make_settings(max_poll_records=500)
    add_flag(db, "fold")
    base = seconds_from_now(-60)
    good1, bad, good2 = (
        add_schedule(db, "fold", {"rollout_percentage": p}, at=base + timedelta(seconds=k))
        for k, p in enumerate((30, 150, 70))
    )
    db.execute("UPDATE flag_schedules SET status = 'dispatched'")
    # the final state (70) is valid: only a check of the state in between finds 150
    publish(settings, due_records(settings, db, [good1, bad, good2]))
    with running_worker(settings):
        wait_until(lambda: status_is(db, bad, "dead"), what="the bad change dead")
        wait_until(lambda: applied_count(dsn) == 2, what="the others applied")
    assert attempts(db, bad)[0]["error_class"] == "constraint_violation"
    log = db.execute("SELECT schedule_id, version FROM flag_change_log ORDER BY version").fetchall()
    assert [(r["schedule_id"], r["version"]) for r in log] == [(good1, 2), (good2, 3)]
    flag = db.execute("SELECT rollout_percentage FROM feature_flags WHERE key = 'fold'")
    assert flag.fetchone()["rollout_percentage"] == 70
