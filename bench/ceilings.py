"""The two ceilings flagsched's throughput is held against, measured on the same machine.

* Kafka: a plain kafka-python ``KafkaConsumer`` loop reading the very records a
  flagsched run consumed (its due topic), doing nothing with them.
* PostgreSQL: the same schedules applied without Kafka, 500 per transaction with
  set-based SQL (``UPDATE feature_flags ... FROM unnest(...)``), writing the same
  change-log, attempt and schedule rows flagsched writes.
"""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from bench.harness import world
from bench.suite import Context
from bench.workload import add_flags, add_schedules, at_once, flag_keys, utcnow


def kafka_consume_rate(kafka: str, topic: str, expect: int, max_poll_records: int = 500) -> float:
    """Records per second of a bare consumer reading ``topic`` from the beginning."""
    consumer = KafkaConsumer(
        bootstrap_servers=kafka.split(","),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=max_poll_records,
    )
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        got = 0
        started = time.perf_counter()
        deadline = started + 120
        while got < expect and time.perf_counter() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got += len(records)
        elapsed = time.perf_counter() - started
    finally:
        consumer.close()
    if got < expect:
        raise RuntimeError(f"only {got} of {expect} records on {topic}")
    return got / elapsed


_CLAIM = """
SELECT id, flag_key, (updates->>'rollout_percentage')::int AS rollout, scheduled_at
  FROM flag_schedules
 WHERE status = 'pending' AND scheduled_at <= now()
 ORDER BY scheduled_at, id
 LIMIT %s
 FOR UPDATE SKIP LOCKED
"""

_APPLY = """
WITH u AS (
    SELECT * FROM unnest(%(keys)s::text[], %(rollouts)s::int[], %(ids)s::bigint[],
                         %(sats)s::timestamptz[]) AS u(key, rollout, id, sat)
), old AS (  -- the statement's snapshot: the values before the update
    SELECT f.key, f.enabled, f.rollout_percentage, f.config
      FROM feature_flags f JOIN u ON u.key = f.key
), upd AS (
    UPDATE feature_flags f
       SET rollout_percentage = u.rollout, version = f.version + 1,
           last_schedule_id = u.id, last_scheduled_at = u.sat, updated_at = now()
      FROM u WHERE f.key = u.key
    RETURNING f.key, u.id, f.enabled, f.rollout_percentage, f.config, f.version
)
INSERT INTO flag_change_log (flag_key, schedule_id, attempt, version, before, after)
SELECT upd.key, upd.id, 1, upd.version,
       jsonb_build_object('enabled', old.enabled, 'rollout_percentage', old.rollout_percentage,
                          'config', old.config),
       jsonb_build_object('enabled', upd.enabled, 'rollout_percentage', upd.rollout_percentage,
                          'config', upd.config)
  FROM upd JOIN old ON old.key = upd.key
"""

_FINISH = """
UPDATE flag_schedules SET status = 'applied', finished_at = now(), finished_attempt = 1,
       updated_at = now()
 WHERE id = ANY(%(ids)s)
"""

_ATTEMPTS = """
INSERT INTO schedule_retry_attempts (schedule_id, attempt, started_at, finished_at, due_at,
                                     lateness_ms, outcome, worker)
SELECT id, 1, now(), now(), sat, EXTRACT(EPOCH FROM now() - sat) * 1000, 'applied', 'ceiling'
  FROM unnest(%(ids)s::bigint[], %(sats)s::timestamptz[]) AS u(id, sat)
"""


def pg_batched_apply_rate(ctx: Context, n: int, batch: int = 500) -> float:
    """Schedules per second applied in batches of ``batch`` on one connection."""
    with world(ctx.services, "ceiling-pg", ctx.raw_dir, topics=False) as w, w.connect() as conn:
        keys = flag_keys(n)
        add_flags(conn, keys)
        add_schedules(conn, at_once(keys, n, utcnow()))
        conn.execute("ANALYZE")
        done = 0
        started = time.perf_counter()
        while True:
            with conn.transaction():
                rows: list[Any] = conn.execute(_CLAIM, (batch,)).fetchall()
                if not rows:
                    break
                params = {
                    "keys": [r[1] for r in rows],
                    "rollouts": [r[2] for r in rows],
                    "ids": [r[0] for r in rows],
                    "sats": [r[3] for r in rows],
                }
                conn.execute(_APPLY, params)
                conn.execute(_FINISH, params)
                conn.execute(_ATTEMPTS, params)
            done += len(rows)
        elapsed = time.perf_counter() - started
        applied = conn.execute("SELECT count(*) FROM flag_change_log").fetchone()
    if done != n or not applied or applied[0] != n:
        raise RuntimeError(f"ceiling applied {applied} of {n}")
    return n / elapsed
