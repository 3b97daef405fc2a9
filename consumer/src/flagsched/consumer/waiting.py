"""The rows of due order (consumer/dueorder.py): a flag's waiting schedules, locked for
the attempting transaction, and the attempts a redelivered wake-up brought before.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import errors

from flagsched.consumer.attempt import SCHEDULE_WITH_ATTEMPT
from flagsched.consumer.bookkeeping import Row
from flagsched.consumer.decode import Coordinates
from flagsched.consumer.dueorder import Bound
from flagsched.consumer.results import Applied
from flagsched.schemas.events import Priority

log = logging.getLogger(__name__)

# Waiting: not attempted yet and never failed (a schedule re-armed by an operator keeps
# its failure history, so it is not waiting).
_WAITING = (
    "s.status IN ('pending', 'dispatched') AND s.retry_count = 0 AND s.first_failed_at IS NULL"
)

# Per flag, its waiting schedules older than the bound (index flag_schedules_waiting_idx),
# at most %(limit)s + 1 of them, then those rows locked. A row another transaction holds
# (a dispatcher publishing it, another worker attempting it) is skipped, or, with
# %(wait)s, waited for up to the lock timeout; either way the caller learns of it from
# the candidates without a row. The lock re-checks _WAITING on the newest row version.
_PULL = f"""
WITH b AS (
    SELECT * FROM unnest(%(key)b::text[], %(sat)b::timestamptz[], %(sid)b::bigint[])
        AS b(key, sat, sid)
), c AS (
    SELECT w.id, b.key FROM b CROSS JOIN LATERAL (
        SELECT s.id FROM flag_schedules s
         WHERE s.flag_key = b.key AND s.status IN ('pending', 'dispatched')
           AND (s.scheduled_at, s.id) < (b.sat, b.sid) AND s.id <> ALL(%(batch)b::bigint[])
           AND {_WAITING}
         ORDER BY s.scheduled_at, s.id LIMIT %(limit)s + 1) w
), got AS (
    SELECT {SCHEDULE_WITH_ATTEMPT}
      FROM flag_schedules s
      LEFT JOIN schedule_retry_attempts a ON a.schedule_id = s.id AND a.attempt = 1
     WHERE s.id IN (SELECT id FROM c) AND {_WAITING}
     ORDER BY s.id
       FOR UPDATE OF s {{lock}}
)
SELECT c.key AS waiting_key, c.id AS waiting_id, got.* FROM c LEFT JOIN got ON got.id = c.id
"""

# Which of the candidates not locked are still waiting (locked elsewhere, then).
_STILL_WAITING = f"SELECT s.id FROM flag_schedules s WHERE s.id = ANY(%s) AND {_WAITING}"


@dataclass
class Waiting:
    """The waiting schedules locked for this transaction (oldest first per flag), and the
    flags whose waiting schedules could not all be taken: ``held``, one of them is held
    by another transaction (an ordering wait, consumer/dueorder.py); ``busy``, more of
    them than the limit."""

    rows: list[Row] = field(default_factory=list)
    held: set[str] = field(default_factory=set)
    busy: set[str] = field(default_factory=set)


def lock_waiting(
    conn: psycopg.Connection[Row],
    bounds: Mapping[str, Bound],
    batch: Sequence[int],
    *,
    limit: int,
    wait: bool,
) -> Waiting:
    """Lock each bounded flag's waiting schedules (the schedules in ``batch`` aside).

    A flag is *held* when one of them is held by another transaction, *busy* when it has
    more than ``limit``: either way its schedules must not take effect before them, so
    the caller does not apply the flag (a held one's schedules wait, a busy one's fail
    as if the flag were locked). ``wait``: wait for held rows up to the transaction's
    lock timeout instead of skipping them.
    """
    if not bounds:
        return Waiting()
    keys = sorted(bounds)
    params = {
        "key": keys,
        "sat": [bounds[k].before[0] for k in keys],
        "sid": [bounds[k].before[1] for k in keys],
        "batch": list(batch),
        "limit": limit,
    }
    if not wait:  # skips what others hold: nothing to fail on, no savepoint needed
        found = conn.execute(_PULL.format(lock="SKIP LOCKED"), params).fetchall()
    else:
        try:
            with conn.transaction():
                found = conn.execute(_PULL.format(lock=""), params).fetchall()
        except (errors.LockNotAvailable, errors.DeadlockDetected) as exc:
            log.info("waiting schedules of flags %s held elsewhere: %s", keys, exc)
            return Waiting(held=set(keys))
    out = Waiting()
    per_flag: dict[str, list[Row]] = {}
    missing: dict[int, str] = {}
    for r in found:
        key = str(r["waiting_key"])
        if r["id"] is None:
            missing[int(r["waiting_id"])] = key
            continue
        per_flag.setdefault(key, []).append(
            {k: v for k, v in r.items() if k not in ("waiting_key", "waiting_id")}
        )
    if missing:
        held = conn.execute(_STILL_WAITING, (list(missing),)).fetchall()
        out.held |= {missing[int(r["id"])] for r in held}
    out.busy |= {k for k, rows in per_flag.items() if len(rows) > limit} - out.held
    for key, rows in per_flag.items():
        if key not in out.busy and key not in out.held:
            out.rows += sorted(rows, key=lambda r: (r["scheduled_at"], r["id"]))
    return out


# Attempts a wake-up brought with its own (applied_with set, at its coordinates).
_BROUGHT = """
SELECT a.schedule_id, a.attempt, a.topic, a.kafka_partition, a.kafka_offset,
       s.flag_key, s.scheduled_at, s.priority, l.version
  FROM unnest(%b::text[], %b::integer[], %b::bigint[]) AS w(topic, part, off)
  JOIN schedule_retry_attempts a
    ON a.applied_with IS NOT NULL
   AND a.kafka_offset = w.off AND a.kafka_partition = w.part AND a.topic = w.topic
  JOIN flag_schedules s ON s.id = a.schedule_id
  LEFT JOIN flag_change_log l ON l.schedule_id = a.schedule_id
 ORDER BY s.scheduled_at, s.id
"""


def brought_before(
    conn: psycopg.Connection[Row], coords: Sequence[Coordinates]
) -> dict[tuple[str, int, int], tuple[Applied, ...]]:
    """What these records' wake-ups brought when they were processed before (their Kafka
    transaction did not commit, so they are here again): replays of those applied
    attempts, keyed by (topic, partition, offset)."""
    if not coords:
        return {}
    rows = conn.execute(
        _BROUGHT,
        ([c.topic for c in coords], [c.partition for c in coords], [c.offset for c in coords]),
    ).fetchall()
    out: dict[tuple[str, int, int], list[Applied]] = {}
    for r in rows:
        where = (str(r["topic"]), int(r["kafka_partition"]), int(r["kafka_offset"]))
        out.setdefault(where, []).append(
            Applied(
                attempt=int(r["attempt"]),
                schedule_id=int(r["schedule_id"]),
                flag_key=str(r["flag_key"]),
                scheduled_at=r["scheduled_at"],
                priority=Priority(r["priority"]),
                flag_version=None if r["version"] is None else int(r["version"]),
                replay=True,
            )
        )
    return {k: tuple(v) for k, v in out.items()}
