"""admin/stats and telemetry/backlog against real attempts in PostgreSQL."""

from __future__ import annotations

import argparse
import contextlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from flagsched.admin.stats import failure_stats, register, render_stats
from flagsched.runtime.telemetry.backlog import (
    PENDING_DUE_SQL,
    RETRYING_SQL,
    BacklogCollector,
    read_backlog,
)
from tests.support.pipeline import (
    add_flag,
    add_schedule,
    attempts,
    hold_flag_lock,
    running_dispatcher,
    running_worker,
    seconds_from_now,
    status_is,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_failures_success_by_attempt_and_backlog(settings, db, dsn):
    since = datetime.now(UTC) - timedelta(seconds=1)
    add_flag(db, "promo")
    add_flag(db, "plain")
    locked = add_schedule(db, "promo", {"enabled": True})
    plain = add_schedule(db, "plain", {"enabled": True})
    missing = add_schedule(db, "missing.flag", {"enabled": True})
    _, release = hold_flag_lock(dsn, "promo")
    try:
        with running_worker(settings), running_dispatcher(settings):
            wait_until(lambda: len(attempts(db, locked)) >= 2, what="two failed attempts")
            during = read_backlog(db, settings.retry_tiers_s)
            release()
            wait_until(
                lambda: (
                    status_is(db, locked, "applied")
                    and status_is(db, plain, "applied")
                    and status_is(db, missing, "dead")
                ),
                what="all three finished",
            )
    finally:
        release_quietly(release)
    assert [r["outcome"] for r in attempts(db, locked)] == ["retry", "retry", "applied"]
    assert during.retrying == 1

    stats = failure_stats(db, since, datetime.now(UTC), tiers_s=settings.retry_tiers_s)

    summary = [(f.error_class, f.attempts, f.schedules, f.dead) for f in stats.failures]
    assert summary == [("lock_contention", 2, 1, 0), ("flag_not_found", 1, 1, 1)]
    lock, not_found = stats.failures
    assert not_found.fingerprint == "FlagNotFound: flag <str> does not exist"
    assert "missing.flag" in not_found.example
    assert not any(ch.isdigit() for ch in lock.fingerprint), lock.fingerprint
    shares = [(a.attempt, a.applied, a.share, a.cumulative) for a in stats.applied_by_attempt]
    assert shares == [(1, 1, 0.5, 0.5), (3, 1, 0.5, 1.0)]
    assert (stats.applied, stats.exhausted, stats.first_attempt_share) == (2, 0, 0.5)
    # Attempt 1 ran three times (applied, lock contention, flag not found), 2 once
    # (contention) and 3 once (applied).
    rates = [(r.attempt, r.finished, r.applied, r.rate) for r in stats.success_by_attempt]
    assert rates == [(1, 3, 1, 1 / 3), (2, 1, 0, 0.0), (3, 1, 1, 1.0)]
    assert stats.suggestion is not None
    assert (stats.suggestion.attempts, stats.suggestion.max_retries) == (3, 2)
    assert stats.suggestion.sample_size == 2
    assert stats.backlog.retrying == 0

    text = render_stats(stats)
    assert "50.0% of schedules that were applied succeeded on attempt 1." in text
    assert "max_retries suggestion: 2 -- 99% of the 2 applied or exhausted" in text
    assert "FlagNotFound: flag <str> does not exist" in text
    assert "        1        3        1   33.3%" in text
    assert json.loads(stats.to_json())["suggestion"]["max_retries"] == 2

    before = failure_stats(db, since - timedelta(hours=1), since)
    assert (before.failures, before.applied, before.suggestion) == ((), 0, None)


def release_quietly(release):
    with contextlib.suppress(Exception):
        release()


def retrying(db, seconds: float | None) -> int:
    sid = add_schedule(db, "f", {"enabled": True}, at=seconds_from_now(-600))
    next_at = None if seconds is None else seconds_from_now(seconds)
    db.execute(
        "UPDATE flag_schedules SET status = 'retrying', next_retry_at = %s WHERE id = %s",
        (next_at, sid),
    )
    return sid


def test_backlog_by_tier_and_overdue_age(db, dsn):
    # Seconds of margin between each offset and its bucket's edges, so that a slow
    # machine (the rows are timed from the test's clock, the buckets from now() at read
    # time) cannot move a row across an edge.
    tiers = (10.0, 20.0, 600.0)
    for offset in (-120.0, -5.0, 8.0, 17.0, 18.0, 300.0, 5000.0, None):
        retrying(db, offset)
    add_schedule(db, "f", {"enabled": True}, at=seconds_from_now(-30))  # due, undispatched
    add_schedule(db, "f", {"enabled": True}, at=seconds_from_now(3600))  # not due yet

    snap = read_backlog(db, tiers)

    assert snap.by_tier == {"overdue": 2, "hold": 1, "10": 2, "20": 1, "600": 1, "none": 1}
    assert snap.retrying == 8
    assert 119 <= snap.oldest_overdue_s < 180
    assert snap.dispatch_backlog == 1
    assert 29 <= snap.oldest_dispatch_s < 90

    registry = CollectorRegistry()
    BacklogCollector(dsn, tiers).register(registry)
    assert registry.get_sample_value("flagsched_retry_backlog_schedules", {"tier": "10"}) == 2
    assert registry.get_sample_value("flagsched_dispatch_backlog_schedules") == 1
    assert registry.get_sample_value("flagsched_backlog_up") == 1
    assert registry.get_sample_value("flagsched_backlog_scrape_errors_total") == 0


def test_backlog_queries_can_use_the_existing_indexes(db):
    db.execute("SET enable_seqscan = off")
    try:
        plans = {
            sql: "\n".join(
                r["QUERY PLAN"] for r in db.execute("EXPLAIN " + sql, {"bounds": [0.0, 1.0]})
            )
            for sql in (RETRYING_SQL, PENDING_DUE_SQL)
        }
    finally:
        db.execute("RESET enable_seqscan")
    # Either index led by status serves it (migration 0012 added a second one; on this
    # empty table the planner may pick either): what matters is an index, no scan.
    retrying = plans[RETRYING_SQL]
    assert "Seq Scan" not in retrying
    assert any(
        name in retrying
        for name in ("flag_schedules_status_next_retry_idx", "flag_schedules_status_due_idx")
    )
    assert "Index Cond: (status = 'retrying'::text)" in retrying
    assert "flag_schedules_pending_due_idx" in plans[PENDING_DUE_SQL]


def test_stats_command(settings, capsys):
    parser = argparse.ArgumentParser(prog="flagsched")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["stats", "--since-minutes", "5"])
    assert args.handler(args, settings) == 0
    out = capsys.readouterr().out
    assert "Failures by class and message (0 groups)" in out
    assert "Retry backlog now: 0 retrying" in out
    args = parser.parse_args(["stats", "--json"])
    assert args.handler(args, settings) == 0
    assert json.loads(capsys.readouterr().out)["applied"] == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["stats", "--since-minutes", "0"])
