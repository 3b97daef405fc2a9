"""Seeding flags and schedules, waiting for them to be applied, reading latencies.

Schedules are written with COPY (100,000 rows in a few seconds). Flags are
assigned round-robin, so any window of consecutive schedules touches distinct
flags (what the batched PostgreSQL ceiling relies on).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench.harness import Proc, Services, applied_at_sql

log = logging.getLogger("bench")

Schedule = tuple[str, datetime, str]  # flag key, due, priority


def flag_keys(n: int, prefix: str = "flag") -> list[str]:
    return [f"{prefix}-{i:06d}" for i in range(n)]


def add_flags(conn: psycopg.Connection[Any], keys: Sequence[str]) -> None:
    with conn.cursor() as cur, cur.copy("COPY feature_flags (key) FROM STDIN") as copy:
        for key in keys:
            copy.write_row((key,))


def add_schedules(conn: psycopg.Connection[Any], schedules: Iterable[Schedule]) -> int:
    """COPY schedules in (each sets rollout_percentage); returns how many."""
    n = 0
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY flag_schedules (flag_key, updates, scheduled_at, priority) FROM STDIN"
        ) as copy,
    ):
        for key, due, priority in schedules:
            copy.write_row((key, json.dumps({"rollout_percentage": n % 101}), due, priority))
            n += 1
    return n


def at_once(keys: Sequence[str], n: int, due: datetime, priority: str = "normal") -> list[Schedule]:
    """``n`` schedules all due at ``due``, flags round-robin."""
    return [(keys[i % len(keys)], due, priority) for i in range(n)]


def spread(
    keys: Sequence[str], rate_per_s: float, duration_s: float, start: datetime
) -> list[Schedule]:
    """Schedules due at a steady rate from ``start`` for ``duration_s``, flags round-robin."""
    n = int(rate_per_s * duration_s)
    step = 1.0 / rate_per_s
    return [(keys[i % len(keys)], start + timedelta(seconds=i * step), "normal") for i in range(n)]


def utcnow() -> datetime:
    return datetime.now(UTC)


def count(conn: psycopg.Connection[Any], query: str, params: Sequence[Any] = ()) -> int:
    row = conn.execute(query, params).fetchone()
    return int(row[0]) if row else 0


def applied_count(conn: psycopg.Connection[Any], exclude_prefix: str | None = None) -> int:
    """Change-log rows, optionally leaving out flags whose key starts with ``exclude_prefix``."""
    if exclude_prefix is None:
        return count(conn, "SELECT count(*) FROM flag_change_log")
    return count(
        conn,
        "SELECT count(*) FROM flag_change_log WHERE flag_key NOT LIKE %s",
        (exclude_prefix + "%",),
    )


def finished_count(conn: psycopg.Connection[Any]) -> int:
    """Schedules in a terminal state (applied, dead, superseded, cancelled)."""
    return count(
        conn,
        "SELECT count(*) FROM flag_schedules"
        " WHERE status IN ('applied', 'dead', 'superseded', 'cancelled')",
    )


def wait_for_count(
    probe: Callable[[], int],
    expect: int,
    *,
    timeout_s: float,
    procs: Sequence[Proc] = (),
    stall_s: float = 60.0,
    interval_s: float = 0.2,
) -> tuple[int, bool]:
    """Poll ``probe`` until it reaches ``expect``; returns (last count, reached).

    Gives up at ``timeout_s``, after ``stall_s`` without progress, or when a process dies.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    last, last_change = -1, started
    while True:
        got = probe()
        if got >= expect:
            return got, True
        now = time.monotonic()
        if got != last:
            last, last_change = got, now
        for p in procs:
            if not p.alive():
                log.error("%s exited early:\n%s", p.label, p.log_text()[-3000:])
                return got, False
        if now > deadline or now - last_change > stall_s:
            log.warning(
                "gave up waiting: %d of %d after %.0fs (%.0fs without progress)",
                got,
                expect,
                now - started,
                now - last_change,
            )
            return got, False
        time.sleep(interval_s)


@dataclass(frozen=True)
class Applied:
    """One applied schedule: when it was due and how long after that it was applied."""

    schedule_id: int
    flag_key: str
    priority: str
    due: datetime
    applied: datetime

    @property
    def latency_ms(self) -> float:
        return (self.applied - self.due).total_seconds() * 1000


def applied_rows(
    conn: psycopg.Connection[Any], services: Services, where: str = "TRUE"
) -> list[Applied]:
    """Every applied schedule with its due and applied times (see harness.applied_at_sql)."""
    rows = conn.execute(
        f"SELECT s.id, s.flag_key, s.priority, s.scheduled_at, {applied_at_sql(services)}"
        " FROM flag_change_log l JOIN flag_schedules s ON s.id = l.schedule_id"
        f" WHERE {where}"
    ).fetchall()
    return [Applied(int(r[0]), r[1], r[2], r[3], r[4]) for r in rows]


@dataclass(frozen=True)
class Attempt:
    """One attempt flagsched recorded, with its lateness (start - due)."""

    attempt: int
    lateness_ms: float
    topic: str
    flag_key: str


def attempts(conn: psycopg.Connection[Any]) -> list[Attempt]:
    """Every attempt flagsched recorded that has a lateness."""
    rows = conn.execute(
        "SELECT a.attempt, a.lateness_ms, coalesce(a.topic, ''), s.flag_key"
        " FROM schedule_retry_attempts a JOIN flag_schedules s ON s.id = a.schedule_id"
        " WHERE a.lateness_ms IS NOT NULL"
    ).fetchall()
    return [Attempt(int(r[0]), float(r[1]), str(r[2]), str(r[3])) for r in rows]


def span_s(rows: Sequence[Applied], start: datetime) -> float:
    """Seconds from ``start`` until the last of ``rows`` was applied."""
    return (max(r.applied for r in rows) - start).total_seconds() if rows else float("nan")


class LockHolder:
    """Holds real ``FOR UPDATE`` row locks on some flags over a bounded window.

    A helper transaction locks the flags from ``start`` for ``hold_s`` seconds, then
    rolls back. Applies of those flags meanwhile hit lock_timeout (a transient
    lock_contention failure) and are retried; after the window they succeed.
    """

    def __init__(self, dsn: str, keys: Sequence[str], start: datetime, hold_s: float) -> None:
        self._dsn, self._keys, self._start, self._hold_s = dsn, list(keys), start, hold_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lock-holder", daemon=True)
        self.locked_at: datetime | None = None
        self.released_at: datetime | None = None

    def __enter__(self) -> LockHolder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with psycopg.connect(self._dsn) as conn:
            self._stop.wait(max(0.0, (self._start - utcnow()).total_seconds()))
            conn.execute(
                "SELECT 1 FROM feature_flags WHERE key = ANY(%s) ORDER BY key FOR UPDATE",
                (self._keys,),
            )
            self.locked_at = utcnow()
            self._stop.wait(self._hold_s)
            conn.rollback()
            self.released_at = utcnow()
