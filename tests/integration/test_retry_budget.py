"""The retry time budget against a real row lock held for over a minute."""

from __future__ import annotations

import psycopg
import pytest

from tests.support.pipeline import (
    add_flag,
    add_schedule,
    running_dispatcher,
    running_worker,
    wait_until,
)

pytestmark = pytest.mark.integration

HELD_S = 60
FLAGS = 12


def test_default_lock_contention_policy_survives_a_lock_held_for_a_minute(settings, db, dsn):
    # The measured failure: under the old default (0.5 s, full jitter, 5 retries) a lock
    # held for 7 s exhausted a third of the schedules. No per-schedule policy here (the
    # test settings' count is 3), so only the lock_contention class policy keeps them alive.
    keys = [f"held.{i}" for i in range(FLAGS)]
    for key in keys:
        add_flag(db, key)
    sids = [add_schedule(db, key, {"enabled": True}) for key in keys]
    holder = psycopg.connect(dsn)
    holder.execute("SELECT 1 FROM feature_flags WHERE key = ANY(%s) FOR UPDATE", (keys,))
    try:
        with running_worker(settings), running_dispatcher(settings):

            def held_long_enough() -> bool:
                row = db.execute(
                    "SELECT count(*) FILTER (WHERE status = 'dead') AS dead,"
                    " count(*) FILTER (WHERE status = 'retrying'"
                    f"  AND first_failed_at <= now() - interval '{HELD_S} seconds') AS old"
                    " FROM flag_schedules WHERE id = ANY(%s)",
                    (sids,),
                ).fetchone()
                assert row["dead"] == 0, "a schedule was exhausted while the lock was held"
                return bool(row["old"] == len(sids))

            wait_until(held_long_enough, timeout_s=HELD_S + 60, interval_s=0.5, what="60 s held")
            holder.rollback()  # the lock goes; each schedule's next retry must now apply
            wait_until(
                lambda: db.execute(
                    "SELECT bool_and(status = 'applied') AS ok FROM flag_schedules"
                    " WHERE id = ANY(%s)",
                    (sids,),
                ).fetchone()["ok"],
                timeout_s=30,
                what="all applied after the release",
            )
    finally:
        holder.close()
    rows = db.execute(
        "SELECT s.id, max(a.attempt) AS attempts,"
        " max(a.next_attempt_at - a.finished_at) AS longest_wait"
        " FROM flag_schedules s JOIN schedule_retry_attempts a ON a.schedule_id = s.id"
        " WHERE s.id = ANY(%s) GROUP BY s.id",
        (sids,),
    ).fetchall()
    # Far more attempts than the count-only default allows, each wait at most the 10 s cap.
    assert all(r["attempts"] > 6 for r in rows), rows
    assert all(r["longest_wait"].total_seconds() <= 10.5 for r in rows), rows
