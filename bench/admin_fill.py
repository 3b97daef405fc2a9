"""The admin benchmark's history: N schedules over 1,000 flags and five attempt rows each.

Loaded the way a restore loads a dump, so that 1,000,000 schedules and 5,000,000
attempts take minutes, not hours: set-based ``INSERT ... SELECT generate_series``
(server-side, no round trip per row), with the secondary indexes of the two tables
dropped first and rebuilt after (one sort per index instead of a B-tree insert per
row and index), and, when the role is a superuser (the bench's own PostgreSQL),
``session_replication_role = replica`` so that the per-row triggers (the experiment
join, the dispatcher's NOTIFY, the foreign-key checks) do not fire: the rows are
consistent by construction. Then ``VACUUM (ANALYZE)``, as a loaded table would be
after autovacuum, so the planner and index-only scans see real statistics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psycopg

TABLES = ("flag_schedules", "schedule_retry_attempts")

_FLAGS = "INSERT INTO feature_flags (key) SELECT 'flag-' || g FROM generate_series(0, 999) g"

# One a second back in time over 1,000 flags: 98 % applied and 1 % dead, spread evenly
# through the history; the 1 % retrying are the newest (as in a real history: what is
# still retrying failed recently), after the 100 newest of all, which were cancelled;
# and 10 schedules across the history last failed with a deadlock. Listed in due
# order (oldest first), the retrying and cancelled ones are at the far end, and the
# deadlocks are rare: a list that walks the due order and filters finds none of them
# quickly, which is what migration 0012's indexes are for.
_SCHEDULES = """
INSERT INTO flag_schedules (flag_key, updates, scheduled_at, status, retry_count,
                            next_retry_at, finished_at, finished_attempt, last_error_class,
                            first_failed_at)
SELECT 'flag-' || (g %% 1000), '{"enabled": true}', now() - make_interval(secs => g),
       s.status, 4,
       CASE WHEN s.status = 'retrying' THEN now() + interval '1 hour' END,
       CASE WHEN s.status <> 'retrying' THEN now() - make_interval(secs => g) END,
       CASE WHEN s.status <> 'retrying' THEN 5 END,
       CASE WHEN g %% 100000 = 7 THEN 'deadlock'
            WHEN s.status <> 'applied' THEN 'lock_contention' END,
       now() - make_interval(secs => g)
  FROM generate_series(1, %(n)s) g,
       LATERAL (SELECT CASE WHEN g <= 100 THEN 'cancelled'
                            WHEN g <= 100 + %(n)s / 100 THEN 'retrying'
                            WHEN g %% 100 = 0 THEN 'dead' ELSE 'applied' END AS status) s
"""

_ATTEMPTS = """
INSERT INTO schedule_retry_attempts (schedule_id, attempt, started_at, finished_at, due_at,
                                     lateness_ms, outcome, error_class, error_message, worker)
SELECT s.id, a, s.scheduled_at + make_interval(secs => a),
       s.scheduled_at + make_interval(secs => a), s.scheduled_at + make_interval(secs => a), 5.0,
       CASE WHEN a < 5 THEN 'retry' WHEN s.status IN ('dead', 'cancelled') THEN s.status
            ELSE 'applied' END,
       CASE WHEN a < 5 OR s.status = 'dead' THEN 'lock_contention' END,
       CASE WHEN a < 5 OR s.status = 'dead' THEN 'canceling statement due to lock timeout' END,
       'bench'
  FROM flag_schedules s, generate_series(1, 5) a
 WHERE s.status <> 'retrying' OR a < 5
"""

_SECONDARY = """
SELECT c.relname AS name, pg_get_indexdef(i.indexrelid) AS definition
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
 WHERE i.indrelid = ANY(%s::regclass[]) AND NOT i.indisprimary AND NOT i.indisunique
 ORDER BY c.relname
"""


@dataclass(frozen=True)
class Filled:
    """What was loaded, and how long each step took."""

    schedules: int
    attempts: int
    seconds: dict[str, float]
    triggers_skipped: bool


def fill(conn: psycopg.Connection[Any], n: int) -> Filled:
    """Load ``n`` schedules and their attempts into the migrated, empty database of
    ``conn`` (an autocommit connection)."""
    seconds: dict[str, float] = {}

    def step(name: str, *statements: tuple[str, Any]) -> None:
        t0 = time.monotonic()
        for statement, params in statements:
            conn.execute(statement, params)
        seconds[name] = time.monotonic() - t0

    row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    superuser = bool(row and row[0])
    indexes = conn.execute(_SECONDARY, (list(TABLES),)).fetchall()
    with conn.transaction():
        conn.execute("SET LOCAL synchronous_commit = off")
        conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
        if superuser:
            conn.execute("SET LOCAL session_replication_role = replica")
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        step("flags and schedules", (_FLAGS, None), (_SCHEDULES, {"n": n}))
        step("attempts", (_ATTEMPTS, None))
        step("indexes", *((definition, None) for _, definition in indexes))
    step("vacuum analyze", *((f"VACUUM (ANALYZE) {t}", None) for t in (*TABLES, "feature_flags")))
    counts = [conn.execute(f"SELECT count(*) FROM {t}").fetchone() for t in TABLES]
    return Filled(
        schedules=int(counts[0][0]) if counts[0] else 0,
        attempts=int(counts[1][0]) if counts[1] else 0,
        seconds=seconds,
        triggers_skipped=superuser,
    )
