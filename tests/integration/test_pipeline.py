"""The pipeline end to end: real Kafka, real PostgreSQL, real faults (held row locks,
violated constraints, duplicate records)."""

from __future__ import annotations

import contextlib
import itertools
import json
from typing import Any

import pytest
from kafka import KafkaProducer

from flagsched.schemas import headers as hdr
from flagsched.schemas.events import ScheduleDue
from flagsched.schemas.headers import RecordHeaders
from tests.support.pipeline import (
    add_flag,
    add_schedule,
    attempts,
    header_map,
    hold_flag_lock,
    owns,
    read_topic,
    running_dispatcher,
    running_worker,
    schedule,
    status_is,
    wait_until,
)

pytestmark = pytest.mark.integration


def lifecycle(settings: Any, expect: int) -> list[dict[str, Any]]:
    layout = settings.topic_layout()
    return [json.loads(r.value) for r in read_topic(settings, layout.lifecycle, expect=expect)]


def test_happy_path_applies_once_and_tells_subscribers(settings, db):
    add_flag(db, "checkout.v2")
    sid = add_schedule(db, "checkout.v2", {"enabled": True, "rollout_percentage": 25})
    with running_worker(settings), running_dispatcher(settings):
        wait_until(lambda: status_is(db, sid, "applied"), what="schedule applied")
    flag = db.execute("SELECT * FROM feature_flags WHERE key = 'checkout.v2'").fetchone()
    assert flag["enabled"] is True
    assert flag["rollout_percentage"] == 25
    assert flag["version"] == 2
    [row] = attempts(db, sid)
    assert row["outcome"] == "applied"
    assert row["attempt"] == 1
    assert row["lateness_ms"] >= 0
    [event] = lifecycle(settings, 1)
    assert event["type"] == "applied"
    assert event["schedule_id"] == sid
    assert event["flag_version"] == 2


def test_lifecycle_events_name_the_schedules_lane(settings, db):
    # Subscribers without database access (an on-call router, say) tell critical
    # schedules from the event alone.
    add_flag(db, "lane.normal")
    add_flag(db, "lane.critical")
    normal = add_schedule(db, "lane.normal", {"enabled": True})
    critical = add_schedule(db, "lane.critical", {"enabled": True}, priority="critical")
    with running_worker(settings), running_dispatcher(settings):
        wait_until(
            lambda: status_is(db, normal, "applied") and status_is(db, critical, "applied"),
            what="both schedules applied",
        )
    lanes = {e["schedule_id"]: (e["type"], e["priority"]) for e in lifecycle(settings, 2)}
    assert lanes == {normal: ("applied", "normal"), critical: ("applied", "critical")}


def test_transient_lock_then_success_on_attempt_three(settings, db, dsn):
    add_flag(db, "promo")
    sid = add_schedule(db, "promo", {"enabled": True})
    _, release = hold_flag_lock(dsn, "promo")
    try:
        with running_worker(settings), running_dispatcher(settings):
            wait_until(lambda: len(attempts(db, sid)) >= 2, what="two failed attempts")
            release()
            wait_until(lambda: status_is(db, sid, "applied"), what="applied after the lock")
    finally:
        release_quietly(release)
    rows = attempts(db, sid)
    assert [r["outcome"] for r in rows] == ["retry", "retry", "applied"]
    assert {r["error_class"] for r in rows[:2]} == {"lock_contention"}
    assert schedule(db, sid)["retry_count"] == 2
    # each retry ran no earlier than planned
    for prev, nxt in itertools.pairwise(rows):
        assert nxt["started_at"] >= prev["next_attempt_at"]


def release_quietly(release: Any) -> None:
    with contextlib.suppress(Exception):
        release()


@pytest.mark.parametrize(
    ("flag", "updates", "error_class"),
    [
        ("missing.flag", {"enabled": True}, "flag_not_found"),
        ("real.flag", {"rollout_percentage": 150}, "constraint_violation"),
        ("real.flag", {"colour": "blue"}, "invalid_update"),
    ],
)
def test_permanent_failure_dead_letters_at_once_with_headers(
    settings, db, flag, updates, error_class
):
    add_flag(db, "real.flag")
    sid = add_schedule(db, flag, updates)
    with running_worker(settings), running_dispatcher(settings):
        wait_until(lambda: status_is(db, sid, "dead"), what="schedule dead")
    layout = settings.topic_layout()
    [dlt] = read_topic(settings, layout.dead_letter, expect=1)
    h = header_map(dlt)
    assert h[hdr.DLT_REASON] == "permanent"
    assert h[hdr.ERROR_CLASS] == error_class
    assert h[hdr.ATTEMPT] == "1"
    assert h[hdr.ORIGIN_TOPIC] == layout.due
    assert h[hdr.ORIGIN_GROUP] == settings.group_id
    assert int(h[hdr.ORIGIN_OFFSET]) >= 0
    assert int(h[hdr.ORIGIN_PARTITION]) >= 0
    assert int(h[hdr.FIRST_FAILURE_MS]) > 0
    assert h[hdr.ERROR_MESSAGE]
    assert dlt.key == flag.encode()
    assert ScheduleDue.model_validate_json(dlt.value).schedule_id == sid
    row = schedule(db, sid)
    assert row["last_error_class"] == error_class
    assert row["last_error"]
    assert [r["outcome"] for r in attempts(db, sid)] == ["dead"]


def test_exhaustion_dead_letters_after_max_retries(settings, db, dsn):
    add_flag(db, "busy")
    sid = add_schedule(db, "busy", {"enabled": True}, max_retries=2)
    _, release = hold_flag_lock(dsn, "busy")
    try:
        with running_worker(settings), running_dispatcher(settings):
            wait_until(lambda: status_is(db, sid, "dead"), what="exhausted", timeout_s=40)
    finally:
        release()
    assert [r["outcome"] for r in attempts(db, sid)] == ["retry", "retry", "dead"]
    layout = settings.topic_layout()
    [dlt] = read_topic(settings, layout.dead_letter, expect=1)
    h = header_map(dlt)
    assert h[hdr.DLT_REASON] == "exhausted"
    assert h[hdr.ATTEMPT] == "3"
    assert h[hdr.ORIGIN_TOPIC] in layout.tier_topics
    types = [e["type"] for e in lifecycle(settings, 3)]
    assert types == ["retry_scheduled", "retry_scheduled", "dead_lettered"]


def test_same_event_delivered_twice_applies_once(settings, db):
    add_flag(db, "dup")
    sid = add_schedule(db, "dup", {"enabled": True})
    db.execute("UPDATE flag_schedules SET status = 'dispatched' WHERE id = %s", (sid,))
    row = schedule(db, sid)
    event = ScheduleDue(
        schedule_id=sid,
        flag_key="dup",
        scheduled_at=row["scheduled_at"],
        dispatched_at=row["scheduled_at"],
    )
    headers = RecordHeaders(attempt=1, due_ms=int(row["scheduled_at"].timestamp() * 1000))
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    layout = settings.topic_layout()
    for _ in range(2):
        producer.send(
            layout.due, key=b"dup", value=event.model_dump_json().encode(), headers=headers.encode()
        )
    producer.flush()
    producer.close()
    seen: list[Any] = []
    with running_worker(settings, on_result=lambda r, c: seen.append(r)):
        wait_until(lambda: len(seen) >= 2, what="both copies handled")
    # the second copy cannot know whether the first one's Kafka transaction committed,
    # so it re-sends the recorded side effects, marked as a replay; the flag changes once
    assert [(r.outcome.value, r.replay) for r in seen] == [("applied", False), ("applied", True)]
    events = lifecycle(settings, 2)
    assert [(e["type"], e["replay"]) for e in events] == [("applied", False), ("applied", True)]
    assert db.execute("SELECT count(*) AS n FROM flag_change_log").fetchone()["n"] == 1
    assert db.execute("SELECT version FROM feature_flags").fetchone()["version"] == 2
    assert len(attempts(db, sid)) == 1


def test_two_workers_share_partitions_and_apply_each_once(settings, db):
    for i in range(12):
        add_flag(db, f"f{i}")
    ids = [add_schedule(db, f"f{i % 12}", {"rollout_percentage": i % 100}) for i in range(60)]
    by_worker: dict[str, int] = {}

    def hook(name: str) -> Any:
        return lambda r, c: by_worker.__setitem__(name, by_worker.get(name, 0) + 1)

    with (
        running_worker(settings, worker_id="w1", on_result=hook("w1")) as w1,
        running_worker(settings, worker_id="w2", on_result=hook("w2")) as w2,
    ):
        due = settings.topic_layout().due
        wait_until(
            lambda: owns(w1, due) and owns(w2, due), what="both own due partitions", timeout_s=90
        )
        with running_dispatcher(settings):
            wait_until(
                lambda: all(status_is(db, s, "applied", "superseded") for s in ids),
                what="all schedules finished",
                timeout_s=60,
            )
    applied = db.execute("SELECT count(*) AS n FROM flag_change_log").fetchone()["n"]
    superseded = db.execute(
        "SELECT count(*) AS n FROM flag_schedules WHERE status = 'superseded'"
    ).fetchone()["n"]
    assert applied + superseded == len(ids)
    assert set(by_worker) == {"w1", "w2"}, by_worker
