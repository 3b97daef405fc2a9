"""Retention (`flagsched cleanup`) against real PostgreSQL: what goes, what never goes,
batches, the advisory lock, and a real second transaction racing the cleanup."""

from __future__ import annotations

import argparse
import json
import random
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from flagsched.admin.cleanup_command import register, run_periodically
from flagsched.admin.retention import _DELETE_BATCH, ADVISORY_LOCK_KEY, MAX_BATCH, _cutoffs, cleanup
from flagsched.runtime.settings import Settings
from tests.support.pipeline import add_flag, connect, wait_until

pytestmark = pytest.mark.integration

DEFAULTS = Settings().retention_days()  # applied 30, superseded 7, cancelled 7, dead 90
LIVE = ("pending", "dispatched", "retrying")


def make_rows(db: Any, status: str, age_days: float, count: int = 1) -> list[int]:
    """``count`` schedules of ``status`` that finished ``age_days`` ago, each with an
    attempt row (and, if applied, a change-log entry)."""
    add_flag_once(db, "retained")
    finished = datetime.now(UTC) - timedelta(days=age_days)
    rows = db.execute(
        "INSERT INTO flag_schedules (flag_key, updates, scheduled_at, status, finished_at,"
        " updated_at, retry_count, next_retry_at)"
        " SELECT 'retained', '{\"enabled\": true}', %(at)s, %(status)s,"
        " CASE WHEN %(status)s IN ('applied', 'superseded', 'cancelled', 'dead') THEN %(at)s END,"
        " %(at)s, CASE WHEN %(status)s = 'retrying' THEN 1 ELSE 0 END,"
        " CASE WHEN %(status)s = 'retrying' THEN %(at)s END"
        " FROM generate_series(1, %(n)s) RETURNING id",
        {"at": finished, "status": status, "n": count},
    ).fetchall()
    ids = [int(r["id"]) for r in rows]
    db.execute(
        "INSERT INTO schedule_retry_attempts (schedule_id, attempt, started_at, finished_at,"
        " outcome) SELECT id, 1, %s, %s, 'retry' FROM unnest(%s::bigint[]) id",
        (finished, finished, ids),
    )
    if status == "applied":
        db.execute(
            "INSERT INTO flag_change_log (flag_key, schedule_id, attempt, version, before, after)"
            " SELECT 'retained', id, 1, id, '{}', '{}' FROM unnest(%s::bigint[]) id",
            (ids,),
        )
    return ids


def add_flag_once(db: Any, key: str) -> None:
    if not db.execute("SELECT 1 FROM feature_flags WHERE key = %s", (key,)).fetchone():
        add_flag(db, key)


def existing(db: Any, ids: list[int]) -> set[int]:
    rows = db.execute("SELECT id FROM flag_schedules WHERE id = ANY(%s)", (ids,)).fetchall()
    return {int(r["id"]) for r in rows}


def counts(db: Any) -> tuple[int, int, int]:
    row = db.execute(
        "SELECT (SELECT count(*) FROM flag_schedules) AS s,"
        " (SELECT count(*) FROM schedule_retry_attempts) AS a,"
        " (SELECT count(*) FROM flag_change_log) AS c"
    ).fetchone()
    return int(row["s"]), int(row["a"]), int(row["c"])


def test_deletes_terminal_schedules_past_retention_with_their_rows_and_nothing_live(db):
    old = {s: make_rows(db, s, days + 1, 3) for s, days in DEFAULTS.items() if days is not None}
    young = {s: make_rows(db, s, days - 1, 2) for s, days in DEFAULTS.items() if days is not None}
    ancient_live = [i for s in LIVE for i in make_rows(db, s, 10_000, 2)]

    dry = cleanup(db, DEFAULTS, dry_run=True)
    assert dry.deleted == {"applied": 3, "superseded": 3, "cancelled": 3, "dead": 3}
    assert (dry.attempts, dry.change_log, dry.batches) == (12, 3, 0)  # nothing deleted
    assert counts(db) == (12 + 8 + 6, 26, 5)  # the dry run deleted nothing

    done = cleanup(db, DEFAULTS)
    assert done.deleted == dry.deleted
    assert (done.attempts, done.change_log, done.skipped) == (12, 3, 0)
    assert not existing(db, [i for ids in old.values() for i in ids])
    kept = [i for ids in young.values() for i in ids] + ancient_live
    assert existing(db, kept) == set(kept)
    assert counts(db) == (14, 14, 2)  # their attempt and change-log rows went too
    assert cleanup(db, DEFAULTS).schedules == 0  # idempotent


def test_minus_one_keeps_a_status_for_ever(db):
    dead = make_rows(db, "dead", 5_000, 2)
    applied = make_rows(db, "applied", 5_000, 2)
    keep_dead = Settings(retention_dead_days=-1).retention_days()
    assert keep_dead["dead"] is None
    result = cleanup(db, keep_dead)
    assert result.deleted["dead"] == 0 and result.deleted["applied"] == 2
    assert existing(db, dead) == set(dead) and not existing(db, applied)
    keep_all = dict.fromkeys(DEFAULTS, None)
    assert cleanup(db, keep_all).schedules == 0
    assert existing(db, dead) == set(dead)


def test_deletes_in_batches_of_at_most_a_thousand(db):
    ids = make_rows(db, "applied", 40, 2_345)
    result = cleanup(db, DEFAULTS)
    # 3 batches of applied rows, and one (empty) per other status
    assert result.batches == 3 + 3 and result.deleted["applied"] == 2_345
    assert not existing(db, ids)
    with pytest.raises(ValueError, match="batch_size"):
        cleanup(db, DEFAULTS, batch_size=MAX_BATCH + 1)


def test_each_batch_is_its_own_transaction(db):
    # A trigger records the transaction that deleted each row: with batch_size 10, 35
    # rows go in 4 transactions of at most 10 rows each.
    audit(db)
    ids = make_rows(db, "dead", 100, 35)
    result = cleanup(db, DEFAULTS, batch_size=10)
    assert result.batches == 4 + 3 and not existing(db, ids)
    per_txn = db.execute("SELECT txid, count(*) AS n FROM deleted_audit GROUP BY txid").fetchall()
    assert sorted(int(r["n"]) for r in per_txn) == [5, 10, 10, 10]
    stop = threading.Event()
    stop.set()  # a stop between batches ends the run before the next one
    more = make_rows(db, "dead", 100, 3)
    assert cleanup(db, DEFAULTS, batch_size=10, stop=stop).batches == 0
    assert existing(db, more) == set(more)


def audit(db: Any) -> None:
    """Record every deleted schedule's status, as the DELETE saw it, and its transaction."""
    db.execute("CREATE TABLE deleted_audit (id bigint, status text, txid bigint)")
    db.execute(
        "CREATE FUNCTION audit_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " INSERT INTO deleted_audit VALUES (OLD.id, OLD.status, txid_current());"
        " RETURN OLD; END $$"
    )
    db.execute(
        "CREATE TRIGGER audit_delete BEFORE DELETE ON flag_schedules"
        " FOR EACH ROW EXECUTE FUNCTION audit_delete()"
    )


def test_one_runner_at_a_time(db, dsn):
    ids = make_rows(db, "dead", 100, 3)
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        result = cleanup(db, DEFAULTS)
        assert result.locked_out and result.schedules == 0
        assert existing(db, ids) == set(ids)
    # The lock goes with its session (the server releases it as the backend exits).
    wait_until(
        lambda: not db.execute("SELECT 1 FROM pg_locks WHERE locktype = 'advisory'").fetchone(),
        what="the other session's advisory lock released",
    )
    assert cleanup(db, DEFAULTS).deleted["dead"] == 3


def test_a_row_locked_by_a_second_transaction_is_skipped_not_deleted(db, dsn):
    # An operator re-arms a dead schedule in a transaction still open while the cleanup
    # runs: SKIP LOCKED passes over it; after the commit it is pending and stays.
    [rearmed, other] = make_rows(db, "dead", 100, 2)
    with psycopg.connect(dsn) as operator:
        operator.execute(
            "UPDATE flag_schedules SET status = 'pending', finished_at = NULL,"
            " finished_attempt = NULL, retry_count = 0, scheduled_at = now() WHERE id = %s",
            (rearmed,),
        )
        result = cleanup(db, DEFAULTS)
        assert result.deleted["dead"] == 1
        operator.commit()
    assert existing(db, [rearmed, other]) == {rearmed}
    assert cleanup(db, DEFAULTS).schedules == 0
    assert (
        db.execute("SELECT status FROM flag_schedules WHERE id = %s", (rearmed,)).fetchone()[
            "status"
        ]
        == "pending"
    )


def test_a_status_change_committed_after_the_snapshot_is_rechecked(db, dsn):
    # The cleanup's own batch statement takes its snapshot, then waits at a gate (an
    # advisory lock held by a third session, checked once before the scan); meanwhile a
    # second transaction re-arms the row and commits. The row lock finds the row updated
    # and re-checks the predicate on its new version (EvalPlanQual): pending, so it stays.
    [rid] = make_rows(db, "dead", 100, 1)
    gated = _DELETE_BATCH.replace(
        "WHERE", "WHERE (SELECT true FROM (SELECT pg_advisory_xact_lock(4242)) g) AND", 1
    )
    cutoff = _cutoffs(DEFAULTS, datetime.now(UTC))["dead"]
    params = {"status": "dead", "cutoff": cutoff, "batch": MAX_BATCH}
    result: dict[str, Any] = {}
    with psycopg.connect(dsn, autocommit=True) as gate:
        gate.execute("SELECT pg_advisory_lock(4242)")

        def run() -> None:
            with connect(dsn) as conn:
                result["batch"] = conn.execute(gated, params).fetchone()

        racer = threading.Thread(target=run)
        racer.start()
        wait_until(
            lambda: db.execute(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event = 'advisory'"
                " AND datname = current_database()"
            ).fetchone(),
            what="the cleanup statement waiting at the gate",
        )
        with psycopg.connect(dsn, autocommit=True) as operator:
            operator.execute("UPDATE flag_schedules SET status = 'pending' WHERE id = %s", (rid,))
        gate.execute("SELECT pg_advisory_unlock(4242)")
        racer.join(timeout=30)
    assert (result["batch"]["selected"], result["batch"]["deleted"]) == (0, 0)
    assert existing(db, [rid]) == {rid}


def test_cleanup_racing_operators_and_workers_never_deletes_a_live_row(db, dsn):
    # A real race: operators re-arm dead schedules and workers finish them again, in
    # their own transactions, while the cleanup runs over and over. A trigger records
    # every deleted row's status as the DELETE saw it.
    audit(db)
    ids = make_rows(db, "dead", 100, 600)
    stop = threading.Event()
    rearmed: set[int] = set()

    def operator(seed: int) -> None:
        rng = random.Random(seed)
        with connect(dsn) as conn:
            while not stop.is_set():
                pick = rng.sample(ids, 5)
                with conn.transaction():
                    got = conn.execute(
                        "UPDATE flag_schedules SET status = 'pending', finished_at = NULL,"
                        " updated_at = now() WHERE id = ANY(%s) AND status = 'dead'"
                        " RETURNING id",
                        (pick,),
                    ).fetchall()
                    rearmed.update(int(r["id"]) for r in got)
                with conn.transaction():  # a worker takes some back to retrying, or dead
                    conn.execute(
                        "UPDATE flag_schedules SET status = CASE WHEN random() < 0.5"
                        " THEN 'retrying' ELSE 'dead' END, finished_at = CASE WHEN"
                        " random() < 0.5 THEN now() - interval '100 days' END,"
                        " updated_at = now() - interval '100 days'"
                        " WHERE id = ANY(%s) AND status = 'pending'",
                        (pick,),
                    )

    threads = [threading.Thread(target=operator, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    runs = 0
    try:
        while runs < 40:
            cleanup(db, DEFAULTS, batch_size=25)
            runs += 1
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    seen = db.execute("SELECT status, count(*) AS n FROM deleted_audit GROUP BY status")
    statuses = {r["status"]: int(r["n"]) for r in seen.fetchall()}
    assert set(statuses) <= {"dead"}, statuses  # never pending, retrying or dispatched
    assert statuses.get("dead", 0) > 0
    assert rearmed, "the operators re-armed schedules during the runs"
    live = db.execute(
        "SELECT count(*) AS n FROM flag_schedules WHERE status IN ('pending', 'retrying')"
    ).fetchone()
    assert live["n"] > 0  # live rows existed all along, and none of them was deleted


def test_periodic_task_and_command(settings, db, capsys):
    ids = make_rows(db, "superseded", 8, 4)
    parser = argparse.ArgumentParser(prog="flagsched")
    register(parser.add_subparsers(dest="command", required=True), lambda a, s: 0)
    from flagsched.admin.cleanup_command import cmd_cleanup

    args = parser.parse_args(["cleanup", "--dry-run"])
    assert cmd_cleanup(args, settings) == 0
    out = capsys.readouterr().out
    assert "would delete 4 schedules (applied 0, superseded 4, cancelled 0, dead 0)" in out
    assert existing(db, ids) == set(ids)

    stop = threading.Event()
    from prometheus_client import CollectorRegistry

    from flagsched.admin.retention import CleanupMetrics

    registry = CollectorRegistry()
    metrics = CleanupMetrics(registry)
    runner = threading.Thread(
        target=run_periodically, args=(settings, stop), kwargs={"every_s": 0.1, "metrics": metrics}
    )
    runner.start()
    try:
        wait_until(lambda: not existing(db, ids), what="the periodic task deleted them")
        more = make_rows(db, "cancelled", 8, 2)
        wait_until(lambda: not existing(db, more), what="and the next run the new ones")
    finally:
        stop.set()
        runner.join(timeout=30)
    sample = registry.get_sample_value
    assert sample("flagsched_cleanup_deleted_schedules_total", {"status": "superseded"}) == 4
    assert sample("flagsched_cleanup_deleted_schedules_total", {"status": "cancelled"}) == 2
    assert (sample("flagsched_cleanup_runs_total", {"result": "done"}) or 0) >= 2
    assert json.dumps(Settings(retention_applied_days=0.5).retention_days())


def test_bad_retention_settings_fail_fast():
    from flagsched.runtime.errors import ConfigError
    from flagsched.runtime.settings import load_settings

    for bad in ("-2", "abc", "40000"):
        with pytest.raises(ConfigError, match="FLAGSCHED_RETENTION_DEAD_DAYS"):
            load_settings(retention_dead_days=bad)
    with pytest.raises(ConfigError, match="FLAGSCHED_CLEANUP_BATCH_SIZE"):
        load_settings(cleanup_batch_size=5000)
