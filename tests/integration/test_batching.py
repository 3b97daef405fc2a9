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
