"""Retention: delete terminal schedules past their retention, never a live one.

``flagsched cleanup`` runs this once; ``flagsched cleanup --periodic`` (or ``--every-s
N``) is the periodic task (its own deployment, see docs/deployment.md, "Retention").
What it deletes and why it is safe:

* **Only terminal rows past their status's retention**: ``applied``, ``superseded``,
  ``cancelled`` or ``dead`` whose ``COALESCE(finished_at, updated_at)`` is older than
  the retention of that status (``FLAGSCHED_RETENTION_<STATUS>_DAYS``; ``-1`` keeps
  them for ever). ``pending``, ``dispatched`` and ``retrying`` are never in the
  predicate.
* **Their attempt rows and change-log entry go with them**, in the same statement: an
  attempt or change-log row has no meaning without its schedule, and one retention per
  status is one thing to reason about. The flag itself keeps the effect.
* **Never a row whose status changed since it was selected**: each batch selects at
  most ``FLAGSCHED_CLEANUP_BATCH_SIZE`` (<= 1,000) ids ``FOR UPDATE SKIP LOCKED``, and
  the ``DELETE`` in the same statement re-checks status and age. A row a worker or an
  operator holds is skipped (SKIP LOCKED); one changed and committed after the
  statement's snapshot is re-evaluated on its new version by the row lock (PostgreSQL's
  EvalPlanQual), and a re-armed ``dead`` schedule is ``pending`` by then, so it stays.
* **One runner at a time**: a run takes a session advisory lock and skips the run if
  another holds it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from psycopg.rows import dict_row

log = logging.getLogger(__name__)

TERMINAL = ("applied", "superseded", "cancelled", "dead")
MAX_BATCH = 1000
#: pg_try_advisory_lock key of the cleanup runner: a fixed constant, so every version
#: and every deployment of the runner contends for the same lock.
ADVISORY_LOCK_KEY = 0x2F1C5A9E6B3D4701

# One status at a time, so the predicate is a range of migration 0009's index
# flag_schedules_terminal_idx (status, COALESCE(finished_at, updated_at)): a batch reads
# its oldest rows in index order, however many younger ones there are.
_PREDICATE = """
     s.status = %(status)s AND COALESCE(s.finished_at, s.updated_at) < %(cutoff)s
"""

# The attempt and change-log rows are found by `= ANY(array)`, an index lookup per id
# (a join with the CTE was planned as a sequential scan of the whole table).
_DELETE_BATCH = f"""
WITH victims AS (
    SELECT s.id FROM flag_schedules s
     WHERE {_PREDICATE}
     ORDER BY COALESCE(s.finished_at, s.updated_at)
     LIMIT %(batch)s
       FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM flag_schedules s USING victims v
     WHERE s.id = v.id AND {_PREDICATE}
    RETURNING s.id
), ids AS (
    SELECT COALESCE(array_agg(id), '{{}}'::bigint[]) AS ids FROM gone
), attempts AS (
    DELETE FROM schedule_retry_attempts
     WHERE schedule_id = ANY((SELECT ids FROM ids)::bigint[]) RETURNING 1
), changes AS (
    DELETE FROM flag_change_log WHERE schedule_id = ANY((SELECT ids FROM ids)::bigint[]) RETURNING 1
)
SELECT (SELECT count(*) FROM victims) AS selected,
       (SELECT count(*) FROM gone) AS deleted,
       (SELECT count(*) FROM attempts) AS attempts,
       (SELECT count(*) FROM changes) AS changes
"""

_COUNT = f"""
WITH victims AS (SELECT s.id FROM flag_schedules s WHERE {_PREDICATE}),
ids AS (SELECT COALESCE(array_agg(id), '{{}}'::bigint[]) AS ids FROM victims)
SELECT (SELECT count(*) FROM victims) AS deleted,
       (SELECT count(*) FROM schedule_retry_attempts
         WHERE schedule_id = ANY((SELECT ids FROM ids)::bigint[])) AS attempts,
       (SELECT count(*) FROM flag_change_log
         WHERE schedule_id = ANY((SELECT ids FROM ids)::bigint[])) AS changes
"""


@dataclass
class CleanupResult:
    """What one run deleted (or, with ``dry_run``, would delete)."""

    dry_run: bool
    deleted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TERMINAL, 0))
    attempts: int = 0
    change_log: int = 0
    batches: int = 0
    skipped: int = 0  # selected, then not deleted: its status or age changed meanwhile
    duration_s: float = 0.0
    locked_out: bool = False  # another runner held the advisory lock: nothing was done

    @property
    def schedules(self) -> int:
        """Schedules deleted in all."""
        return sum(self.deleted.values())


class CleanupMetrics:
    """The cleanup's Prometheus metrics (``flagsched_cleanup_*``) on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.deleted = Counter(
            "flagsched_cleanup_deleted_schedules",
            "Terminal schedules deleted by retention, by status",
            ["status"],
            registry=registry,
        )
        self.deleted_rows = Counter(
            "flagsched_cleanup_deleted_rows",
            "Attempt and change-log rows deleted with their schedules, by table",
            ["table"],
            registry=registry,
        )
        self.runs = Counter(
            "flagsched_cleanup_runs",
            "Cleanup runs, by result (done, dry_run, locked_out, failed)",
            ["result"],
            registry=registry,
        )
        self.duration = Histogram(
            "flagsched_cleanup_duration_seconds",
            "Duration of a cleanup run",
            registry=registry,
            buckets=(0.01, 0.1, 0.5, 1, 5, 30, 120, 600),
        )
        self.last_success = Gauge(
            "flagsched_cleanup_last_success_timestamp_seconds",
            "When the last cleanup run finished without error (Unix time)",
            registry=registry,
        )
        for status in TERMINAL:
            self.deleted.labels(status)
        for table in ("schedule_retry_attempts", "flag_change_log"):
            self.deleted_rows.labels(table)
        for result in ("done", "dry_run", "locked_out", "failed"):
            self.runs.labels(result)

    def record(self, result: CleanupResult) -> None:
        """Count one finished run."""
        kind = "locked_out" if result.locked_out else "dry_run" if result.dry_run else "done"
        self.runs.labels(kind).inc()
        self.duration.observe(result.duration_s)
        self.last_success.set(time.time())
        if result.dry_run or result.locked_out:
            return
        for status, n in result.deleted.items():
            self.deleted.labels(status).inc(n)
        self.deleted_rows.labels("schedule_retry_attempts").inc(result.attempts)
        self.deleted_rows.labels("flag_change_log").inc(result.change_log)


def _cutoffs(retention_days: Mapping[str, float | None], now: datetime) -> dict[str, datetime]:
    """The cutoff per status that is not kept for ever."""
    return {
        status: now - timedelta(days=days)
        for status in TERMINAL
        if (days := retention_days.get(status)) is not None
    }


def cleanup(
    conn: psycopg.Connection[Any],
    retention_days: Mapping[str, float | None],
    *,
    dry_run: bool = False,
    batch_size: int = MAX_BATCH,
    stop: threading.Event | None = None,
    now: datetime | None = None,
) -> CleanupResult:
    """One run on ``conn`` (autocommit; each batch is its own transaction).

    ``retention_days`` maps each terminal status to days (``None``: keep for ever); the
    cutoffs are fixed at the start of the run (``now``, default the current time), so a
    run ends even while schedules keep finishing. Stops between batches when ``stop`` is
    set.
    """
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch_size must be 1..{MAX_BATCH}, got {batch_size}")
    began = time.monotonic()
    result = CleanupResult(dry_run=dry_run)
    cutoffs = _cutoffs(retention_days, now or datetime.now(UTC))
    with conn.cursor(row_factory=dict_row) as cur:
        got = cur.execute("SELECT pg_try_advisory_lock(%s) AS ok", (ADVISORY_LOCK_KEY,))
        if not (row := got.fetchone()) or not row["ok"]:
            result.locked_out = True
            result.duration_s = time.monotonic() - began
            log.info("cleanup: skipped, another runner holds the advisory lock")
            return result
        try:
            for status, cutoff in cutoffs.items():
                params = {"status": status, "cutoff": cutoff, "batch": batch_size}
                if dry_run:
                    counted = cur.execute(_COUNT, params).fetchone()
                    assert counted is not None
                    _add(result, status, counted)
                    continue
                while not (stop and stop.is_set()):
                    with conn.transaction():
                        batch = cur.execute(_DELETE_BATCH, params).fetchone()
                    assert batch is not None
                    result.batches += 1
                    _add(result, status, batch)
                    result.skipped += int(batch["selected"]) - int(batch["deleted"])
                    if int(batch["selected"]) < batch_size:
                        break
        finally:
            cur.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
    result.duration_s = time.monotonic() - began
    log.info(
        "cleanup%s: %s %d schedules (applied=%d superseded=%d cancelled=%d dead=%d),"
        " %d attempt rows, %d change-log rows in %d batches, %d skipped as changed, %.3fs",
        " (dry run)" if dry_run else "",
        "would delete" if dry_run else "deleted",
        result.schedules,
        *(result.deleted[s] for s in TERMINAL),
        result.attempts,
        result.change_log,
        result.batches,
        result.skipped,
        result.duration_s,
    )
    return result


def _add(result: CleanupResult, status: str, row: Mapping[str, Any]) -> None:
    result.deleted[status] += int(row["deleted"])
    result.attempts += int(row["attempts"])
    result.change_log += int(row["changes"])
