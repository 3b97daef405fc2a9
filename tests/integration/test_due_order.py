"""Due order (issue 18): healthy schedules of one flag take effect in (scheduled_at, id)
order, whatever order their wake-ups arrive in, and the same rows give the same outcome
on every run. A stale retry is still superseded (tests/integration/test_retry_flow.py).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from kafka import KafkaProducer

from flagsched.consumer.apply import run_batch
from flagsched.consumer.bookkeeping import AttemptContext
from flagsched.consumer.decode import Coordinates, Delivery
from flagsched.consumer.dueorder import MAX_ORDER_WAITS
from flagsched.consumer.results import Applied, Deferred, Outcome, RetryScheduled, facts
from flagsched.runtime.db.connect import connect
from flagsched.runtime.settings import Settings
from flagsched.schemas.events import ScheduleDue, to_epoch_ms
from flagsched.schemas.headers import RecordHeaders
from flagsched.schemas.topics import TopicLayout
from tests.support.pipeline import (
    add_flag,
    add_schedule,
    owns,
    read_topic,
    running_worker,
    seconds_from_now,
    wait_until,
)

pytestmark = pytest.mark.integration

FLAGS = 100
PER_FLAG = 6
#: How far ahead a same-instant burst is due: its wake-ups wait in the tiers (0.5, 1 and
#: 2 s here) until then.
LEAD_S = 4.0


def burst(db: Any, run: str, *, apart_s: float) -> list[int]:
    """FLAGS flags with PER_FLAG schedules each, all setting the same fields, due together
    (``apart_s`` = 0, LEAD_S from now) or ``apart_s`` apart (the last one due a second
    ago: a backlog, so a newer wake-up can reach a worker before an older one); ids
    interleave the flags. Returns the ids."""
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO feature_flags (key) VALUES (%s)",
            [(f"{run}.f{i}",) for i in range(FLAGS)],
        )
    at = seconds_from_now(LEAD_S if not apart_s else -apart_s * PER_FLAG)
    rows = [
        (
            f"{run}.f{i}",
            json.dumps({"enabled": k % 2 == 0, "rollout_percentage": 10 * k}),
            at + timedelta(seconds=apart_s * k),
        )
        for k in range(PER_FLAG)
        for i in range(FLAGS)
    ]
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO flag_schedules (flag_key, updates, scheduled_at) VALUES (%s, %s, %s)"
            " RETURNING id",
            rows,
            returning=True,
        )
        ids = []
        while True:
            got = cur.fetchone()
            ids.append(int(got["id"]))
            if not cur.nextset():
                break
    return ids


def predispatch(settings: Settings, db: Any, ids: list[int]) -> None:
    """Publish the wake-ups into the delay tiers as the dispatcher's pre-dispatch does, but
    in the order that hurt in issue 18: each flag's newest schedule first, its schedules
    spread over every tier (the dispatcher picks the tier by the time left when it
    publishes, so a large burst straddles tiers)."""
    layout = settings.topic_layout()
    tiers = list(layout.tiers_s)
    rows = db.execute(
        "UPDATE flag_schedules SET status = 'dispatched', dispatched_at = now()"
        " WHERE id = ANY(%s) RETURNING id, flag_key, scheduled_at",
        (ids,),
    ).fetchall()
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    for n, r in enumerate(sorted(rows, key=lambda r: (r["scheduled_at"], r["id"]), reverse=True)):
        event = ScheduleDue(
            schedule_id=r["id"],
            flag_key=r["flag_key"],
            scheduled_at=r["scheduled_at"],
            dispatched_at=r["scheduled_at"],
        )
        headers = RecordHeaders(attempt=1, due_ms=to_epoch_ms(r["scheduled_at"]))
        producer.send(
            layout.tier_topic(tiers[n // FLAGS % len(tiers)]),
            key=r["flag_key"].encode(),
            value=event.model_dump_json().encode(),
            headers=headers.encode(),
        )
    producer.flush()
    producer.close()


def outcome(db: Any, run: str) -> dict[str, Any]:
    """Per flag (by position): its schedules' statuses in due order, and the change log."""
    rows = db.execute(
        "SELECT id, flag_key, status FROM flag_schedules WHERE flag_key LIKE %s"
        " ORDER BY flag_key, scheduled_at, id",
        (f"{run}.%",),
    ).fetchall()
    log = db.execute(
        "SELECT l.flag_key, l.schedule_id FROM flag_change_log l"
        " WHERE l.flag_key LIKE %s ORDER BY l.flag_key, l.version",
        (f"{run}.%",),
    ).fetchall()
    statuses: dict[str, list[str]] = {}
    due: dict[str, list[int]] = {}
    for r in rows:
        key = r["flag_key"].removeprefix(f"{run}.")
        statuses.setdefault(key, []).append(r["status"])
        due.setdefault(key, []).append(r["id"])
    changed: dict[str, list[int]] = {}
    for r in log:
        changed.setdefault(r["flag_key"].removeprefix(f"{run}."), []).append(r["schedule_id"])
    return {
        "statuses": statuses,
        "counts": Counter(s for v in statuses.values() for s in v),
        "in_due_order": all(changed.get(k) == due[k] for k in due),
        # applied ahead of their own wake-up, by a newer one's: the wake-ups really
        # arrived out of due order
        "brought": db.execute(
            "SELECT count(*) AS n FROM schedule_retry_attempts a JOIN flag_schedules s"
            " ON s.id = a.schedule_id WHERE s.flag_key LIKE %s AND a.applied_with IS NOT NULL",
            (f"{run}.%",),
        ).fetchone()["n"],
    }


def final(db: Any, run: str) -> bool:
    left = db.execute(
        "SELECT count(*) AS n FROM flag_schedules WHERE flag_key LIKE %s"
        " AND status NOT IN ('applied', 'superseded', 'dead', 'cancelled')",
        (f"{run}.%",),
    ).fetchone()["n"]
    return int(left) == 0


def both_own_every_tier(layout: TopicLayout, w1: Any, w2: Any) -> bool:
    return all(owns(w1, t) and owns(w2, t) for t in layout.tier_topics)


@pytest.fixture
def burst_settings(make_settings: Any) -> Settings:
    # Small polls: one flag's wake-ups reach the workers in several polls, as in a large
    # burst (issue 18: 20,000 schedules, 500 a poll).
    settings: Settings = make_settings(tier_partitions=3, max_poll_records=40)
    return settings


@pytest.mark.parametrize("apart_s", [0.0, 1.0], ids=["same-instant", "1s-apart"])
def test_pre_dispatched_bursts_apply_in_due_order_the_same_on_every_run(
    burst_settings: Settings, db: Any, apart_s: float
) -> None:
    layout = burst_settings.topic_layout()
    runs: list[dict[str, Any]] = []
    with (
        running_worker(burst_settings, worker_id="w1") as w1,
        running_worker(burst_settings, worker_id="w2") as w2,
    ):
        wait_until(lambda: both_own_every_tier(layout, w1, w2), what="both own tier partitions")
        for n in range(3):
            run = f"r{n}"
            predispatch(burst_settings, db, burst(db, run, apart_s=apart_s))
            wait_until(
                lambda run=run: final(db, run),  # type: ignore[misc]
                what=f"run {run} final",
                timeout_s=LEAD_S + 60,
            )
            runs.append(outcome(db, run))
            print(f"apart {apart_s}s, run {n}: {dict(runs[-1]['counts'])}")
    for r in runs:
        assert r["counts"] == {"applied": FLAGS * PER_FLAG}, r["counts"]
        assert r["in_due_order"]
        assert r["brought"] > 0
    assert runs[0]["statuses"] == runs[1]["statuses"] == runs[2]["statuses"]
    # subscribers hear of every one, brought or not, once (replays aside)
    n = 3 * FLAGS * PER_FLAG
    events = [json.loads(r.value) for r in read_topic(burst_settings, layout.lifecycle, expect=n)]
    applied = Counter(
        e["schedule_id"] for e in events if e["type"] == "applied" and not e["replay"]
    )
    assert len(applied) == n
    assert set(applied.values()) == {1}


# --- the apply path on its own: real PostgreSQL, records as a worker decodes them -------


def wake_up(db: Any, sid: int, offset: int) -> Delivery:
    row = db.execute("SELECT * FROM flag_schedules WHERE id = %s", (sid,)).fetchone()
    event = ScheduleDue(
        schedule_id=sid,
        flag_key=row["flag_key"],
        scheduled_at=row["scheduled_at"],
        dispatched_at=row["scheduled_at"],
    )
    headers = RecordHeaders(attempt=1, due_ms=to_epoch_ms(row["scheduled_at"]))
    return Delivery(event, headers, Coordinates("t.retry.1s", 0, offset, 0))


@pytest.fixture
def three(settings: Settings, db: Any) -> list[int]:
    """Three dispatched schedules of one flag, due a second ago at the same instant."""
    add_flag(db, "promo")
    at = seconds_from_now(-1)
    ids = [add_schedule(db, "promo", {"rollout_percentage": 10 * k}, at=at) for k in (1, 2, 3)]
    db.execute("UPDATE flag_schedules SET status = 'dispatched'")
    return ids


def context(settings: Settings) -> AttemptContext:
    return AttemptContext(
        policy=settings.default_retry_policy(),
        worker_id="test",
        lock_timeout_ms=0,
        statement_timeout_ms=5000,
    )


def test_the_newest_wake_up_brings_the_older_ones_and_a_redelivery_resends_them(
    settings: Settings, db: Any, dsn: str, three: list[int]
) -> None:
    first, second, third = three
    ctx = context(settings)
    with connect(dsn, autocommit=True) as conn:
        [r] = run_batch(conn, [wake_up(db, third, 7)], ctx)
        assert isinstance(r, Applied) and not r.replay
        assert [(b.schedule_id, b.outcome, b.flag_version) for b in r.also_applied] == [
            (first, Outcome.APPLIED, 2),
            (second, Outcome.APPLIED, 3),
        ]
        assert r.flag_version == 4
        # the same record again (its Kafka transaction did not commit): everything it
        # did is sent again, as replays
        [again] = run_batch(conn, [wake_up(db, third, 7)], ctx)
        assert isinstance(again, Applied) and again.replay
        assert [(b.schedule_id, b.replay) for b in again.also_applied] == [
            (first, True),
            (second, True),
        ]
        # the older ones' own wake-ups find them done
        dropped = run_batch(conn, [wake_up(db, first, 1), wake_up(db, second, 2)], ctx)
        assert [d.outcome for d in dropped] == [Outcome.DROP, Outcome.DROP]
        assert all(not d.also_applied for d in dropped)
    brought = db.execute(
        "SELECT schedule_id, applied_with, kafka_offset FROM schedule_retry_attempts"
        " ORDER BY schedule_id"
    ).fetchall()
    assert [(b["schedule_id"], b["applied_with"], b["kafka_offset"]) for b in brought] == [
        (first, third, 7),
        (second, third, 7),
        (third, None, 7),
    ]


@pytest.mark.parametrize("lock_timeout_ms", [0, 200], ids=["no-lock-wait", "lock-wait"])
def test_an_older_schedule_held_elsewhere_makes_the_newer_one_wait_its_turn(
    settings: Settings, db: Any, dsn: str, three: list[int], lock_timeout_ms: int
) -> None:
    first, _, third = three
    holder = psycopg.connect(dsn)  # a real row lock, as a dispatcher publishing it holds
    holder.execute("SELECT 1 FROM flag_schedules WHERE id = %s FOR UPDATE", (first,))
    ctx = dataclasses.replace(context(settings), lock_timeout_ms=lock_timeout_ms)
    last = wake_up(db, third, 8)
    last = dataclasses.replace(
        last, headers=last.headers.model_copy(update={"order_waits": MAX_ORDER_WAITS})
    )
    try:
        with connect(dsn, autocommit=True) as conn:
            [r] = run_batch(conn, [wake_up(db, third, 7)], ctx)
            # Nothing was recorded: an ordering wait costs no attempt.
            statuses = db.execute("SELECT status FROM flag_schedules ORDER BY id").fetchall()
            assert [s["status"] for s in statuses] == ["dispatched"] * 3
            assert (
                db.execute("SELECT count(*) AS n FROM schedule_retry_attempts").fetchone()["n"] == 0
            )
            # Bounded: a row held through every wait fails the newer one as locked.
            [late] = run_batch(conn, [last], ctx)
    finally:
        holder.rollback()
        holder.close()
    assert isinstance(r, Deferred), r
    assert (r.schedule_id, r.attempt, r.carried.order_waits) == (third, 1, 1)
    assert isinstance(late, RetryScheduled) and late.error_class == "lock_contention", late
    assert "older schedule" in late.error_message
    statuses = db.execute("SELECT status FROM flag_schedules ORDER BY id").fetchall()
    assert [s["status"] for s in statuses] == ["dispatched", "dispatched", "retrying"]
    assert db.execute("SELECT count(*) AS n FROM flag_change_log").fetchone()["n"] == 0


def test_a_batch_redone_one_at_a_time_still_brings_the_older_ones_first(
    settings: Settings, db: Any, dsn: str
) -> None:
    add_flag(db, "fold")
    at = seconds_from_now(-1)
    older, bad, newest = (
        add_schedule(db, "fold", {"rollout_percentage": p}, at=at + timedelta(milliseconds=k))
        for k, p in enumerate((30, 150, 70))
    )
    db.execute("UPDATE flag_schedules SET status = 'dispatched'")
    # 150 breaks a CHECK constraint: the folded write is refused and the batch is redone
    # one schedule at a time, the waiting one brought first
    with connect(dsn, autocommit=True) as conn:
        results = run_batch(conn, [wake_up(db, bad, 1), wake_up(db, newest, 2)], context(settings))
    assert [(r.outcome, facts(r).error_class) for r in results] == [
        (Outcome.DEAD, "constraint_violation"),
        (Outcome.APPLIED, None),
    ]
    assert [b.schedule_id for b in results[1].also_applied] == [older]
    log = db.execute("SELECT schedule_id FROM flag_change_log ORDER BY version").fetchall()
    assert [r["schedule_id"] for r in log] == [older, newest]
    row = db.execute(
        "SELECT applied_with FROM schedule_retry_attempts WHERE schedule_id = %s", (older,)
    ).fetchone()
    assert row["applied_with"] == newest
