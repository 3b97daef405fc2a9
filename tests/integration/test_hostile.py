"""A bad row, a forged record or a hostile control event harms only itself (issue 11).

Each case runs a real worker (and dispatcher) with healthy schedules in the same
partition (one partition per topic) and, where timing allows, the same poll: the
healthy ones apply on time, no OPEN appears on the control topic, no breaker opens,
the bad one ends where the rule says with its reason, and every process stays up
(``Running`` fails the test if a part's thread died).
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from flagsched.schemas import headers as hdr
from tests.support.hostile import (
    BreakerWatch,
    applied_on_time,
    as_before_0005,
    due_record,
    forge,
    healthy,
    no_open_published,
)
from tests.support.pipeline import (
    add_flag,
    add_schedule,
    attempts,
    header_map,
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

ONE_PARTITION = {"due_partitions": 1, "priority_partitions": 1, "tier_partitions": 1}
YEAR_2100_MS = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp() * 1000)


def outcome(db: Any, sid: int) -> dict[str, Any]:
    """Where a schedule ended, without reading its ``updates``."""
    return dict(
        db.execute(
            "SELECT status, last_error_class, last_error FROM flag_schedules WHERE id = %s", (sid,)
        ).fetchone()
    )


def dead_letters(settings: Any, n: int) -> list[dict[str, str]]:
    recs = read_topic(settings, settings.topic_layout().dead_letter, expect=n)
    return [header_map(r) for r in recs]


# --- forged schedule-due records -------------------------------------------------------


def _flag_mismatch(db: Any) -> tuple[int, str]:
    add_flag(db, "victim")
    # keyed (and folded) by a healthy flag, naming a schedule of another flag
    return add_schedule(db, "victim", {"enabled": True}, at=seconds_from_now(5)), "but schedule"


FORGED = {
    # case: (schedule id in the record, or how to make one; far-future due; message fragment)
    "payload flag_key differs from the row's": (_flag_mismatch, False, "but schedule"),
    "schedule_id of 2^63": (lambda db: (2**63, ""), False, "schedule_id"),
    "due in the year 2100": (lambda db: (1, ""), True, "beyond what"),
}


@pytest.mark.parametrize("case", list(FORGED))
def test_a_forged_due_record_is_poison_and_the_rest_applies(make_settings, db, case):
    settings = make_settings(**ONE_PARTITION, dispatch_lookahead_s=0.0)
    at = seconds_from_now(5)
    ids = healthy(db, 5, at)
    make, far, fragment = FORGED[case]
    sid, _ = make(db)
    # Due a little after the healthy ones: the partition is held at it until the
    # healthy records are behind it, so they come in the same poll.
    due_ms = YEAR_2100_MS if far else int(at.timestamp() * 1000) + 300
    watch = BreakerWatch()
    with running_worker(settings, on_breaker=watch), running_dispatcher(settings):
        # Sent shortly before it is due, as the dispatcher would (a due-topic record
        # due later than the largest tier is itself forged, see test 'year 2100').
        wait_until(lambda: seconds_from_now(1) >= at, timeout_s=10, what="a second before due")
        forge(settings, settings.topic_layout().due, [due_record(sid, "h0", at, due_ms=due_ms)])
        wait_until(lambda: applied_on_time(db, ids), what="healthy schedules applied")
        if case.startswith("payload"):
            wait_until(lambda: status_is(db, sid, "applied"), what="the victim, by its own")
        [dead] = dead_letters(settings, 1)
    assert dead[hdr.DLT_REASON] == "poison" and dead[hdr.ERROR_CLASS] == "poison"
    assert fragment in dead[hdr.ERROR_MESSAGE]
    assert int(dead[hdr.DUE_MS]) == due_ms  # the due time it carried, not 0
    assert not watch.opened and no_open_published(settings)


def test_an_attempt_the_row_does_not_expect_is_dropped(make_settings, db):
    settings = make_settings(**ONE_PARTITION, dispatch_lookahead_s=0.0)
    at = seconds_from_now(3)
    ids = healthy(db, 5, at)
    forge(settings, settings.topic_layout().due, [due_record(ids[0], "h0", at, attempt=7)])
    watch = BreakerWatch()
    with running_worker(settings, on_breaker=watch), running_dispatcher(settings):
        wait_until(lambda: applied_on_time(db, ids), what="healthy schedules applied")
    assert [a["attempt"] for a in attempts(db, ids[0])] == [1]
    assert not watch.opened and no_open_published(settings)


def test_a_flag_key_edited_after_dispatch_is_resent_under_the_new_key(make_settings, db):
    settings = make_settings(**ONE_PARTITION, dispatch_lookahead_s=0.0, dispatch_stuck_after_s=1.0)
    at = seconds_from_now(0)
    ids = healthy(db, 5, at)
    add_flag(db, "old")
    add_flag(db, "new")
    sid = add_schedule(db, "old", {"enabled": True}, at=at)
    with running_dispatcher(settings):
        wait_until(lambda: status_is(db, sid, "dispatched"), what="dispatched under 'old'")
    db.execute("UPDATE flag_schedules SET flag_key = 'new' WHERE id = %s", (sid,))
    watch = BreakerWatch()
    with running_worker(settings, on_breaker=watch), running_dispatcher(settings):
        wait_until(lambda: status_is(db, sid, "applied"), what="applied under 'new'")
        wait_until(lambda: all(status_is(db, i, "applied") for i in ids), what="healthy")
        [dead] = dead_letters(settings, 1)
    assert dead[hdr.DLT_REASON] == "poison" and "is of flag 'new'" in dead[hdr.ERROR_MESSAGE]
    flags = {r["key"]: r["enabled"] for r in db.execute("SELECT key, enabled FROM feature_flags")}
    assert flags["new"] is True and flags["old"] is False
    assert not watch.opened and no_open_published(settings)


def test_a_future_producer_timestamp_on_a_tier_topic_is_replaced_by_the_broker(make_settings, db):
    settings = make_settings(**ONE_PARTITION, dispatch_lookahead_s=10.0)
    layout = settings.topic_layout()
    at = seconds_from_now(5)  # pre-dispatched into the 2 s tier, like the forged record
    ids = healthy(db, 5, at)
    tier = layout.tier_topic(max(layout.tiers_s))
    forged = due_record(999_999, "h0", seconds_from_now(20 * 24 * 3600))
    forge(settings, tier, [forged], timestamp_ms=YEAR_2100_MS)
    [rec] = read_topic(settings, tier, expect=1)
    assert abs(rec.timestamp - datetime.now(UTC).timestamp() * 1000) < 60_000
    watch = BreakerWatch()
    with running_worker(settings, on_breaker=watch), running_dispatcher(settings):
        wait_until(lambda: applied_on_time(db, ids), what="healthy schedules applied")
    assert not watch.opened and no_open_published(settings)


# --- rows the database's CHECKs would refuse today (written as before migration 0005) ---


def _predispatched(make_settings: Any, db: Any) -> tuple[Any, list[int], datetime]:
    """Settings, healthy ids and their due time, with every row already pre-dispatched
    into one tier partition (so the bad row and the healthy ones wake in one poll)."""
    settings = make_settings(**ONE_PARTITION, dispatch_lookahead_s=10.0)
    at = seconds_from_now(8)
    return settings, healthy(db, 5, at), at


def test_updates_nested_5000_deep_dead_letter_that_schedule(make_settings, db):
    settings, ids, _ = _predispatched(make_settings, db)
    add_flag(db, "deep")
    sid = add_schedule(db, "deep", {"enabled": True}, at=schedule(db, ids[0])["scheduled_at"])
    with running_dispatcher(settings):
        wait_until(lambda: status_is(db, sid, "dispatched"), what="pre-dispatched")
    deep = '{"config": ' + '{"a": ' * 5000 + "1" + "}" * 5001
    with as_before_0005(db, "flag_schedules_updates_bounded"):
        db.execute("UPDATE flag_schedules SET updates = %s::jsonb WHERE id = %s", (deep, sid))
    watch = BreakerWatch()
    with running_worker(settings, on_breaker=watch), running_dispatcher(settings):
        wait_until(lambda: applied_on_time(db, ids), what="healthy schedules applied")
        wait_until(lambda: outcome(db, sid)["status"] == "dead", what="the deep one dead")
        [dead] = dead_letters(settings, 1)
    row = outcome(db, sid)  # not SELECT *: this test's own client cannot read the document
    assert row["last_error_class"] == "invalid_update"
    assert "nested too deeply" in row["last_error"]
    assert (dead[hdr.ERROR_CLASS], dead[hdr.DLT_REASON]) == ("invalid_update", "permanent")
    assert not watch.opened and no_open_published(settings)


def test_a_retry_policy_with_an_unknown_key_dead_letters_its_failing_schedule(
    make_settings, db, dsn
):
    settings, ids, _ = _predispatched(make_settings, db)
    add_flag(db, "held")
    sid = add_schedule(db, "held", {"enabled": True}, at=schedule(db, ids[0])["scheduled_at"])
    with running_dispatcher(settings):
        wait_until(lambda: status_is(db, sid, "dispatched"), what="pre-dispatched")
    with as_before_0005(db, "flag_schedules_retry_policy_shape"):
        db.execute(
            "UPDATE flag_schedules SET retry_policy = '{\"max_retriez\": 2}' WHERE id = %s",
            (sid,),
        )
    _, release = hold_flag_lock(dsn, "held")  # a real lock: the attempt fails, retryable
    watch = BreakerWatch()
    try:
        with running_worker(settings, on_breaker=watch), running_dispatcher(settings):
            wait_until(lambda: applied_on_time(db, ids), what="healthy schedules applied")
            wait_until(lambda: status_is(db, sid, "dead"), what="the held one dead")
            [dead] = dead_letters(settings, 1)
    finally:
        release()
    row = schedule(db, sid)
    assert row["last_error_class"] == "invalid_retry_policy"
    assert "max_retriez" in row["last_error"]
    # What it could not be retried from: the held lock, as the lock wait or (with due
    # order, which takes waiting rows with SKIP LOCKED) as the flag found locked.
    assert any(f"(after {e}" in row["last_error"] for e in ("LockNotAvailable", "FlagLocked"))
    assert (dead[hdr.ERROR_CLASS], dead[hdr.DLT_REASON]) == ("invalid_retry_policy", "permanent")
    assert not watch.opened and no_open_published(settings)


def test_an_unknown_error_outside_every_savepoint_is_retried_then_dead_lettered(make_settings, db):
    """A real database error the error table does not know (a trigger's RAISE), thrown
    where no savepoint catches it: while recording the attempt."""
    settings = make_settings(**ONE_PARTITION, dispatch_lookahead_s=0.0)
    at = seconds_from_now(3)
    ids = healthy(db, 5, at)
    add_flag(db, "boom")
    sid = add_schedule(db, "boom", {"enabled": True}, at=at)
    db.execute(
        "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " RAISE EXCEPTION 'refused by a trigger'; END $$"
    )
    db.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON schedule_retry_attempts FOR EACH ROW"
        f" WHEN (NEW.schedule_id = {sid} AND NEW.outcome = 'applied') EXECUTE FUNCTION boom()"
    )
    watch = BreakerWatch()
    with running_worker(settings, on_breaker=watch), running_dispatcher(settings):
        wait_until(lambda: applied_on_time(db, ids), what="healthy schedules applied")
        wait_until(lambda: status_is(db, sid, "dead"), what="the refused one dead")
        [dead] = dead_letters(settings, 1)
    rows = attempts(db, sid)
    assert [r["outcome"] for r in rows] == ["retry", "retry", "retry", "dead"]  # max_retries 3
    assert {r["error_class"] for r in rows} == {"unknown"}
    assert "RaiseException: refused by a trigger" in rows[-1]["error_message"]
    assert (dead[hdr.ERROR_CLASS], dead[hdr.DLT_REASON]) == ("unknown", "exhausted")
    assert "refused by a trigger" in dead[hdr.ERROR_MESSAGE]
    assert all(r["finished_at"] >= r["started_at"] for r in rows)
    assert not watch.opened and no_open_published(settings)


def test_a_failure_that_cannot_even_be_recorded_dead_letters_that_record_alone(make_settings, db):
    """The trigger refuses every attempt row of one schedule: its record is dead-lettered
    (``permanent``, the row untouched), and the batch around it applies."""
    settings = make_settings(**ONE_PARTITION, dispatch_lookahead_s=0.0)
    at = seconds_from_now(3)
    ids = healthy(db, 5, at)
    add_flag(db, "boom")
    sid = add_schedule(db, "boom", {"enabled": True}, at=at)
    db.execute(
        "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " RAISE EXCEPTION 'refused by a trigger'; END $$"
    )
    db.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON schedule_retry_attempts FOR EACH ROW"
        f" WHEN (NEW.schedule_id = {sid}) EXECUTE FUNCTION boom()"
    )
    watch = BreakerWatch()
    with running_worker(settings, on_breaker=watch), running_dispatcher(settings):
        wait_until(lambda: applied_on_time(db, ids), what="healthy schedules applied")
        [dead] = dead_letters(settings, 1)
    assert (dead[hdr.ERROR_CLASS], dead[hdr.DLT_REASON]) == ("unknown", "permanent")
    assert "refused by a trigger" in dead[hdr.ERROR_MESSAGE]
    assert attempts(db, sid) == [] and schedule(db, sid)["status"] == "dispatched"
    assert not watch.opened and no_open_published(settings)


# --- the dispatcher --------------------------------------------------------------------


def test_the_dispatcher_retires_a_bad_row_and_goes_on_also_after_a_restart(make_settings, db):
    settings = make_settings(dispatch_lookahead_s=0.0)
    bad_key = "bad key\r\n\x1b[31mforged"

    def bad_rows() -> list[int]:
        at = seconds_from_now(-60)  # sorts first, every round
        with as_before_0005(db, "flag_schedules_flag_key_pattern"):
            first = add_schedule(db, bad_key, {"enabled": True}, at=at)
        with as_before_0005(db, "flag_schedules_updates_bounded"):
            deep = '{"config": ' + '{"a": ' * 100 + "1" + "}" * 101
            second = db.execute(
                "INSERT INTO flag_schedules (flag_key, updates, scheduled_at)"
                " VALUES ('h0', %s::jsonb, %s) RETURNING id",
                (deep, at),
            ).fetchone()["id"]
        return [first, second]

    first_bad = bad_rows()
    ids = healthy(db, 3, seconds_from_now(0))
    with running_worker(settings), running_dispatcher(settings):
        wait_until(lambda: all(status_is(db, i, "applied") for i in ids), what="healthy")
    again_bad = bad_rows()
    more = healthy(db, 3, seconds_from_now(0), prefix="m")
    with running_worker(settings), running_dispatcher(settings):  # a restart
        wait_until(lambda: all(status_is(db, i, "applied") for i in more), what="after restart")
    for sid in first_bad + again_bad:
        row = schedule(db, sid)
        assert (row["status"], row["last_error_class"]) == ("dead", "invalid_schedule"), row
    assert "flag_key" in schedule(db, first_bad[0])["last_error"]
    assert "flag_schedules_updates_bounded" in schedule(db, first_bad[1])["last_error"]


# --- the control topic -----------------------------------------------------------------


def test_forged_open_events_cannot_keep_the_group_paused(make_settings, db, caplog):
    settings = make_settings(**ONE_PARTITION, dispatch_lookahead_s=0.0)
    layout = settings.topic_layout()
    intruder = "intruder\r\n\x1b[31mFAKE LOG LINE"

    def event(reason: str = "db down") -> bytes:
        return json.dumps(
            {"state": "open", "worker_id": intruder, "reason": reason, "at": _now_iso()}
        ).encode()

    stop = threading.Event()

    def flood() -> None:
        while not stop.wait(0.1):
            forge(
                settings,
                layout.control,
                [
                    (b"breaker", event(), []),
                    (b"breaker", event("x" * 20_000), []),  # over the size bound
                    (b"breaker", b"\xff not json", []),
                ],
            )

    ids = healthy(db, 5, seconds_from_now(3))
    caplog.set_level(logging.INFO, logger="flagsched.consumer")
    flooder = threading.Thread(target=flood, daemon=True)
    with running_worker(settings) as worker, running_dispatcher(settings):
        flooder.start()
        try:
            wait_until(lambda: applied_on_time(db, ids, max_late_ms=1500), what="healthy")
            assert not worker.breaker.is_open
        finally:
            stop.set()
            flooder.join(timeout=10)
    logged = "\n".join(r.getMessage() for r in caplog.records if "intruder" in r.getMessage())
    assert "breaker opened by intruder\\r\\n\\x1b[31mFAKE" in logged
    assert "\r" not in logged and "\x1b" not in logged


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()
