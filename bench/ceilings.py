"""The two ceilings flagsched's throughput is held against, measured on the same machine.

* Kafka: a plain kafka-python ``KafkaConsumer`` loop reading the very records a
  flagsched run consumed (its due topic), doing nothing with them.
* PostgreSQL: the same schedules applied without Kafka, 500 per transaction with
  set-based SQL: the product's own flag write (``flagsched.consumer.flag_write``,
  ``UPDATE feature_flags ... FROM unnest(...)`` with the change log), then the same
  attempt and schedule rows flagsched writes.
"""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from bench.harness import world
from bench.suite import Context
from bench.workload import add_flags, add_schedules, at_once, flag_keys, utcnow
from flagsched.consumer.flag_write import WRITE_FLAGS


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


# Each due schedule with its flag, both locked, and the flag's next state worked out in
# SQL (the workload sets rollout_percentage, one schedule per flag): the parameters of
# the product's own flag write, so no Python runs per row.
_CLAIM = """
WITH s AS (
    SELECT id, flag_key, updates, scheduled_at
      FROM flag_schedules
     WHERE status = 'pending' AND scheduled_at <= now()
     ORDER BY scheduled_at, id
     LIMIT %s
       FOR UPDATE SKIP LOCKED
)
SELECT s.id, s.flag_key, s.scheduled_at, f.enabled,
       (s.updates->>'rollout_percentage')::int AS rollout, f.config::text AS config,
       f.version + 1 AS version,
       (coalesce(f.field_stamps, '{}') || jsonb_build_object('rollout_percentage',
           jsonb_build_array((EXTRACT(EPOCH FROM s.scheduled_at) * 1000000)::bigint, s.id)
       ))::text AS stamps,
       jsonb_build_object('enabled', f.enabled, 'rollout_percentage', f.rollout_percentage,
                          'config', f.config)::text AS before,
       jsonb_build_object('enabled', f.enabled,
                          'rollout_percentage', (s.updates->>'rollout_percentage')::int,
                          'config', f.config)::text AS after
  FROM s JOIN feature_flags f ON f.key = s.flag_key
 ORDER BY f.key
   FOR UPDATE OF f
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
                cols = list(zip(*rows, strict=True))
                sid, key, sat = list(cols[0]), list(cols[1]), list(cols[2])
                # The product's statement (flagsched.consumer.flag_write), as a worker runs it.
                conn.execute(
                    WRITE_FLAGS,
                    {
                        "key": key,
                        "enabled": list(cols[3]),
                        "rollout": list(cols[4]),
                        "config": list(cols[5]),
                        "version": list(cols[6]),
                        "stamps": list(cols[7]),
                        "sid": sid,
                        "sat": sat,
                        "l_key": key,
                        "l_sid": sid,
                        "l_n": [1] * len(rows),
                        "l_version": list(cols[6]),
                        "l_before": list(cols[8]),
                        "l_after": list(cols[9]),
                    },
                )
                params = {"ids": sid, "sats": sat}
                conn.execute(_FINISH, params)
                conn.execute(_ATTEMPTS, params)
            done += len(rows)
        elapsed = time.perf_counter() - started
        applied = conn.execute("SELECT count(*) FROM flag_change_log").fetchone()
    if done != n or not applied or applied[0] != n:
        raise RuntimeError(f"ceiling applied {applied} of {n}")
    return n / elapsed
