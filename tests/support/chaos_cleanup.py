"""The retention option of the chaos harness: ``flagsched cleanup`` every second during a
chaos run, while an operator retries dead schedules by hand (SQL, as docs/deployment.md
"Retention" and README describe). Triggers archive every deleted row, so the ledger still
accounts for each schedule, and records the status each one had when it was deleted."""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass, field
from typing import Any

import psycopg

from flagsched.admin.retention import cleanup
from tests.support.pipeline import connect

log = logging.getLogger(__name__)

_TABLES = {
    "flag_schedules": "chaos_deleted_schedules",
    "schedule_retry_attempts": "chaos_deleted_attempts",
    "flag_change_log": "chaos_deleted_changes",
}
# Copies of the three tables (plain columns, no constraints), filled by BEFORE DELETE
# triggers; the schedules' copy also keeps the status each row had when it was deleted.
ARCHIVE_SQL = "".join(
    f"""
CREATE TABLE {copy} (LIKE {table}{", status_at_delete text" if table == "flag_schedules" else ""});
CREATE FUNCTION {copy}_fn() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {copy} SELECT OLD.*{", OLD.status" if table == "flag_schedules" else ""};
    RETURN OLD;
END $$;
CREATE TRIGGER chaos_archive BEFORE DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION {copy}_fn();
"""
    for table, copy in _TABLES.items()
)

#: A manual retry of a dead schedule: one more attempt, number retry_count + 1, due now.
#: The dispatcher's stuck-row sweep sends its wake-up (next_retry_at and dispatched_at are
#: set past FLAGSCHED_DISPATCH_STUCK_AFTER_S); the status check keeps it a no-op for a row
#: that is no longer dead, or gone.
REARM_SQL = """
UPDATE flag_schedules
   SET status = 'retrying', finished_at = NULL, finished_attempt = NULL, updated_at = now(),
       next_retry_at = date_trunc('milliseconds', now()) - make_interval(secs => %(stuck)s),
       dispatched_at = now() - make_interval(secs => %(stuck)s)
 WHERE id = %(id)s AND status = 'dead'
RETURNING id, retry_count
"""


@dataclass
class CleanupChaos:
    """Run ``cleanup`` every ``every_s`` (retention ``retention_s`` for every terminal
    status) and re-arm up to ``retries_per_s`` dead schedules a second."""

    dsn: str
    retention_s: float = 30.0
    every_s: float = 1.0
    retries_per_s: int = 3
    stuck_after_s: float = 1.0
    seed: int = 0
    runs: int = 0
    deleted: int = 0
    #: schedule id -> the attempt numbers that were dead when an operator re-armed them
    manual_retries: dict[int, list[int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _stop_cleanup: threading.Event = field(default_factory=threading.Event)
    _stop_retries: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def install(self) -> None:
        """Create the archive (before the workload is seeded)."""
        with connect(self.dsn) as conn:
            conn.execute(ARCHIVE_SQL)

    def start(self, workload_ids: list[int]) -> None:
        """Start the cleanup and the operator."""
        self._threads = [
            threading.Thread(target=self._cleanup_loop, name="chaos-cleanup", daemon=True),
            threading.Thread(
                target=self._retry_loop, args=(workload_ids,), name="chaos-retry", daemon=True
            ),
        ]
        for t in self._threads:
            t.start()

    def stop_retries(self) -> None:
        """The operator stops (before the drain: retried rows must finish again)."""
        self._stop_retries.set()
        self._threads[1].join(timeout=30)

    def stop(self) -> None:
        """Stop everything."""
        self.stop_retries()
        self._stop_cleanup.set()
        self._threads[0].join(timeout=60)

    def _cleanup_loop(self) -> None:
        days = self.retention_s / 86400
        retention = dict.fromkeys(("applied", "superseded", "cancelled", "dead"), days)
        while not self._stop_cleanup.is_set():
            try:
                with connect(self.dsn) as conn:
                    result = cleanup(conn, retention, batch_size=50)
                self.runs += 1
                self.deleted += result.schedules
            except psycopg.OperationalError as exc:  # a database outage fault: try again
                log.info("chaos cleanup: %s", exc)
            except Exception as exc:  # a real bug: reported by the ledger
                self.errors.append(f"cleanup failed: {exc!r}")
            self._stop_cleanup.wait(self.every_s)

    def _retry_loop(self, ids: list[int]) -> None:
        rng = random.Random(self.seed)
        while not self._stop_retries.is_set():
            try:
                with connect(self.dsn) as conn:
                    dead = conn.execute(
                        "SELECT id FROM flag_schedules WHERE id = ANY(%s) AND status = 'dead'",
                        (ids,),
                    ).fetchall()
                    pick = rng.sample([int(r["id"]) for r in dead], min(len(dead), 3))
                    for sid in pick[: self.retries_per_s]:
                        got = conn.execute(
                            REARM_SQL, {"id": sid, "stuck": self.stuck_after_s + 1}
                        ).fetchone()
                        if got is not None:
                            n = int(got["retry_count"])
                            self.manual_retries.setdefault(sid, []).append(n)
            except psycopg.OperationalError as exc:
                log.info("chaos retry: %s", exc)
            self._stop_retries.wait(1.0)


def archived(conn: psycopg.Connection[Any]) -> dict[str, list[dict[str, Any]]]:
    """Deleted rows by table (empty without the archive); schedule rows carry
    ``status_at_delete``."""
    exists = conn.execute("SELECT to_regclass('chaos_deleted_schedules') AS t").fetchone()
    if exists is None or exists["t"] is None:
        return {table: [] for table in _TABLES}
    return {
        table: [dict(r) for r in conn.execute(f"SELECT * FROM {copy}").fetchall()]
        for table, copy in _TABLES.items()
    }
