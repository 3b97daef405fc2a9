"""One flag, one worker (docs/architecture.md): a flag's due record and its retry-tier
records reach the same worker, so two workers never attempt one flag at once.

The chaos ledger's "healthy schedule applied after 2 attempts" came from two workers
attempting one flag at once: worker 1's batch held the flag's row lock (a long
transaction on a loaded machine) while worker 2 attempted a newer schedule of the same
flag from a tier topic; the lock wait ran out and the healthy schedule spent an attempt
on ``lock_contention``. Here a batch is made to hold its flags deterministically: a
helper connection holds the row lock of one schedule in the batch (as a dispatcher
publishing it briefly does), so the batch waits for it with its flag rows locked. While
it waits, each flag's newer schedule arrives through the smallest tier. With the flag's
records split over two workers (3 due and 2 tier partitions, as the test settings had)
the newer schedule fails on ``lock_contention``; co-partitioned, it waits in its
worker's partition and applies on its first attempt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.partitioner.default import murmur2

from flagsched.runtime.settings import Settings
from flagsched.schemas.events import ScheduleDue, to_epoch_ms
from flagsched.schemas.headers import RecordHeaders
from tests.support.chaos import Processes, keys_per_partition, settle
from tests.support.pipeline import add_flag, add_schedule, seconds_from_now, wait_until

pytestmark = pytest.mark.integration

#: How long the stalled batch holds its flags at most once the newer records are out:
#: ten times the test settings' lock wait (200 ms) and the poll wait (100 ms).
STALL_S = 3.0


def partition_of(key: str, partitions: int) -> int:
    """The partition kafka-python's default partitioner gives ``key``."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def owners(settings: Settings) -> dict[tuple[str, int], str]:
    """(topic, partition) -> member of the workers' group, asked of the coordinator."""
    admin = KafkaAdminClient(**settings.kafka_client_config())
    try:
        info = admin.describe_groups([settings.group_id])[settings.group_id]
    finally:
        admin.close()
    if str(info["group_state"]).lower() != "stable":
        return {}
    return {
        (tp["topic"], p): str(m["member_id"])
        for m in info["members"]
        for tp in (m.get("member_assignment") or {}).get("assigned_partitions", [])
        for p in tp["partitions"]
    }


def both_own_due_and_tier(settings: Settings) -> bool:
    layout = settings.topic_layout()
    owned = owners(settings)
    topics = (layout.due, layout.tier_topic(layout.tiers_s[0]))
    per_topic = [{m for (t, _), m in owned.items() if t == topic} for topic in topics]
    return all(len(members) == 2 for members in per_topic)


def publish(settings: Settings, db: Any, records: list[tuple[str, int]]) -> None:
    """The wake-ups of ``records`` (topic, schedule id) in one Kafka transaction, as the
    dispatcher (due topic) and its pre-dispatch (tier topic) publish them: visible to
    the workers at once, in this order per partition."""
    producer = KafkaProducer(
        **settings.kafka_client_config(), transactional_id=f"{settings.group_id}-test"
    )
    producer.init_transactions()
    producer.begin_transaction()
    for topic, sid in records:
        row = db.execute("SELECT * FROM flag_schedules WHERE id = %s", (sid,)).fetchone()
        event = ScheduleDue(
            schedule_id=sid,
            flag_key=row["flag_key"],
            scheduled_at=row["scheduled_at"],
            dispatched_at=row["scheduled_at"],
        )
        headers = RecordHeaders(attempt=1, due_ms=to_epoch_ms(row["scheduled_at"]))
        producer.send(
            topic,
            key=row["flag_key"].encode(),
            value=event.model_dump_json().encode(),
            headers=headers.encode(),
        )
    producer.commit_transaction()
    producer.close()


def flags_held(dsn: str, keys: list[str]) -> bool:
    """Whether every flag row in ``keys`` is locked by an open transaction (read-only:
    the row's locker is an xid some backend still holds)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM feature_flags f JOIN pg_locks l"
            " ON l.locktype = 'transactionid' AND l.transactionid = f.xmax AND l.granted"
            " WHERE f.key = ANY(%s)",
            (keys,),
        ).fetchone()
    return row is not None and int(row[0]) == len(keys)


def test_a_flags_tier_records_wait_behind_its_batch_instead_of_failing_on_another_worker(
    settings: Settings, db: Any, dsn: str, tmp_path: Path
) -> None:
    layout = settings.topic_layout()
    tier = layout.tier_topic(layout.tiers_s[0])
    procs = Processes(settings, tmp_path / "logs", "oneflag")
    holder = psycopg.connect(dsn)
    try:
        for _ in range(2):
            procs.start("worker")
        wait_until(
            lambda: both_own_due_and_tier(settings),
            timeout_s=90,
            what="two workers, each owning due and tier partitions",
            interval_s=0.2,
        )
        # One worker's batches are stalled; the other stays free to take whatever
        # records of the stalled worker's flags it owns.
        owned = owners(settings)
        stalled = owned[(layout.due, 0)]
        due_ps = sorted(p for (t, p), m in owned.items() if t == layout.due and m == stalled)
        # A flag for every (due partition, tier partition) pair a key of those due
        # partitions can hash to: unless each pair is one unit of the assignor (equal
        # counts), some flag's tier record is owned by the free worker.
        pairs: dict[tuple[int, int], str] = {}
        for i in range(2000):
            key = f"f{i}"
            due_p = partition_of(key, layout.due_partitions)
            if due_p in due_ps:
                pairs.setdefault((due_p, partition_of(key, layout.tier_partitions)), key)
        flags = sorted(pairs.values())
        stalls = [keys_per_partition("stall", layout.due_partitions)[p] for p in due_ps]
        for key in (*flags, *stalls):
            add_flag(db, key)
        older = {k: add_schedule(db, k, {"enabled": True}, at=seconds_from_now(-2)) for k in flags}
        newer = {
            k: add_schedule(db, k, {"rollout_percentage": 40}, at=seconds_from_now(-1))
            for k in flags
        }
        stall_ids = [
            add_schedule(db, k, {"enabled": True}, at=seconds_from_now(-3)) for k in stalls
        ]
        db.execute("UPDATE flag_schedules SET status = 'dispatched', dispatched_at = now()")
        everything = [*older.values(), *newer.values(), *stall_ids]

        holder.execute("SELECT 1 FROM flag_schedules WHERE id = ANY(%s) FOR UPDATE", (stall_ids,))
        # Each stalled batch: the held schedule first, then its flags' older schedules.
        publish(
            settings,
            db,
            [(layout.due, s) for s in stall_ids] + [(layout.due, older[k]) for k in flags],
        )
        wait_until(
            lambda: flags_held(dsn, flags),
            timeout_s=30,
            what="every flag held by a batch waiting for its held schedule row",
        )
        publish(settings, db, [(tier, newer[k]) for k in flags])
        # Until a newer schedule is attempted against its held flag (the failure), or
        # STALL_S: time enough for a worker that owns its record to try it.
        settle(lambda: attempted(db, list(newer.values())), STALL_S)
        holder.rollback()
        wait_until(
            lambda: final(db, everything),
            timeout_s=60,
            what="every schedule final",
        )
    finally:
        holder.close()
        procs.close()
    got = {
        r["id"]: (r["status"], r["n"], r["errors"])
        for r in db.execute(
            "SELECT s.id, s.status, count(a.*) AS n,"
            " array_remove(array_agg(a.error_class), NULL) AS errors"
            " FROM flag_schedules s LEFT JOIN schedule_retry_attempts a ON a.schedule_id = s.id"
            " WHERE s.id = ANY(%s) GROUP BY s.id",
            (everything,),
        )
    }
    assert procs.exits == []
    # Every schedule is healthy: applied on its first attempt, none failed on its flag.
    failed = {sid: v for sid, v in got.items() if v != ("applied", 1, [])}
    assert failed == {}, f"{len(failed)} of {len(got)} not applied on attempt 1: {failed}"
    # Due order held too: each flag ends with its newer schedule's change on top.
    for key in flags:
        row = db.execute(
            "SELECT enabled, rollout_percentage FROM feature_flags WHERE key = %s", (key,)
        ).fetchone()
        assert (row["enabled"], row["rollout_percentage"]) == (True, 40), key


def attempted(db: Any, ids: list[int]) -> bool:
    """Whether any of ``ids`` has an attempt recorded."""
    row = db.execute(
        "SELECT count(*) AS n FROM schedule_retry_attempts WHERE schedule_id = ANY(%s)", (ids,)
    ).fetchone()
    return int(row["n"]) > 0


def final(db: Any, ids: list[int]) -> bool:
    """Whether every one of ``ids`` is applied, dead or superseded."""
    row = db.execute(
        "SELECT count(*) AS n FROM flag_schedules WHERE id = ANY(%s)"
        " AND status IN ('applied', 'dead', 'superseded')",
        (ids,),
    ).fetchone()
    return int(row["n"]) == len(ids)
