"""Due order against a late dispatcher (docs/reliability.md, "What the chaos runs found", 8).

A flag's newer schedule, pre-dispatched, falls due while its older schedule is still
``pending`` and row-locked inside the dispatcher's claim transaction (a dispatcher
seconds behind, waiting for the broker to acknowledge). Due order must apply the older
one first, so the newer one waits for it; it must not spend an attempt on
``lock_contention``, since nothing is wrong with either schedule.

The dispatcher here is real and really stalled inside its claim: a trigger makes its
``UPDATE ... SET status = 'dispatched'`` of the older row wait for an advisory lock the
test holds, so the claimed row stays locked, as it does while the broker is slow to
acknowledge, until the test lets go.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from flagsched.runtime.settings import Settings
from tests.integration.test_one_flag_one_worker import attempted, final, owners, publish
from tests.support.chaos import Processes, settle
from tests.support.pipeline import add_flag, add_schedule, seconds_from_now, wait_until

pytestmark = pytest.mark.integration

#: The advisory lock the stalled dispatcher waits for.
STALL_LOCK = 718_281
#: How long the dispatcher is held in its claim once the newer record is out: many
#: times the smallest test tier (0.5 s) and the test settings' lock wait (200 ms).
STALL_S = 4.0

_STALL_TRIGGER = f"""
CREATE FUNCTION stall_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({STALL_LOCK});
    RETURN NEW;
END $$;
CREATE TRIGGER stall_claim BEFORE UPDATE ON flag_schedules FOR EACH ROW
  WHEN (OLD.status = 'pending' AND NEW.status = 'dispatched') EXECUTE FUNCTION stall_claim();
"""


def dispatcher_stalled(dsn: str, schedule_id: int) -> bool:
    """Whether a backend holds ``schedule_id``'s row locked while it waits for the
    advisory lock (read-only: the row's xmax is a live transaction that is waiting)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM flag_schedules s"
            " JOIN pg_locks x ON x.locktype = 'transactionid' AND x.transactionid = s.xmax"
            " AND x.granted"
            " JOIN pg_locks w ON w.pid = x.pid AND w.locktype = 'advisory' AND NOT w.granted"
            " WHERE s.id = %s AND s.status = 'pending'",
            (schedule_id,),
        ).fetchone()
    return row is not None and int(row[0]) == 1


def test_a_newer_schedule_waits_for_an_older_one_the_dispatcher_is_still_claiming(
    settings: Settings, db: Any, dsn: str, tmp_path: Path
) -> None:
    layout = settings.topic_layout()
    tier = layout.tier_topic(layout.tiers_s[0])
    add_flag(db, "late-claim")
    older = add_schedule(db, "late-claim", {"enabled": True}, at=seconds_from_now(-2))
    newer = add_schedule(db, "late-claim", {"rollout_percentage": 40}, at=seconds_from_now(-1))
    # The newer one was pre-dispatched before this dispatcher fell behind.
    db.execute(
        "UPDATE flag_schedules SET status = 'dispatched', dispatched_at = now() WHERE id = %s",
        (newer,),
    )
    db.execute(_STALL_TRIGGER)
    holder = psycopg.connect(dsn, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (STALL_LOCK,))
    procs = Processes(settings, tmp_path / "logs", "lateclaim")
    try:
        procs.start("worker")
        procs.start("dispatcher")
        wait_until(
            lambda: len(owners(settings)) > 0,
            timeout_s=90,
            what="the worker owning its partitions",
            interval_s=0.2,
        )
        wait_until(
            lambda: dispatcher_stalled(dsn, older),
            timeout_s=60,
            what="the dispatcher holding the older schedule in its claim",
            interval_s=0.1,
        )
        publish(settings, db, [(tier, newer)])
        # The newer one's wake-up is due at once; it meets the older one, still claimed.
        failed_early = settle(lambda: attempted(db, [newer]), STALL_S)
        still_pending = db.execute(
            "SELECT status FROM flag_schedules WHERE id = %s", (older,)
        ).fetchone()
        holder.execute("SELECT pg_advisory_unlock(%s)", (STALL_LOCK,))
        wait_until(lambda: final(db, [older, newer]), timeout_s=60, what="both schedules final")
    finally:
        holder.close()
        procs.close()
    assert procs.exits == []
    assert still_pending == {"status": "pending"}  # the claim really was held meanwhile
    got = {
        r["id"]: (r["status"], r["n"], r["errors"])
        for r in db.execute(
            "SELECT s.id, s.status, count(a.*) AS n,"
            " array_remove(array_agg(a.error_class), NULL) AS errors"
            " FROM flag_schedules s LEFT JOIN schedule_retry_attempts a ON a.schedule_id = s.id"
            " WHERE s.id = ANY(%s) GROUP BY s.id",
            ([older, newer],),
        )
    }
    # Nothing was attempted while the older schedule was claimed, and both schedules are
    # healthy: each applied on its first attempt, in due order.
    assert not failed_early, f"the newer schedule was attempted against the claim: {got}"
    assert got == {older: ("applied", 1, []), newer: ("applied", 1, [])}
    versions = {
        r["schedule_id"]: r["version"]
        for r in db.execute(
            "SELECT schedule_id, version FROM flag_change_log WHERE schedule_id = ANY(%s)",
            ([older, newer],),
        )
    }
    assert versions[older] < versions[newer]
    flag = db.execute(
        "SELECT enabled, rollout_percentage FROM feature_flags WHERE key = 'late-claim'"
    ).fetchone()
    assert (flag["enabled"], flag["rollout_percentage"]) == (True, 40)
