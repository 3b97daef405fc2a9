"""The dispatcher: claims due schedules and publishes one schedule-due event each.

Rows are claimed with ``FOR UPDATE SKIP LOCKED`` so several dispatchers can run
at once, published keyed by flag (idempotent producer, acks=all), and marked
``dispatched`` in the same transaction only after the broker acknowledged. A
crash in between republishes on restart, which is harmless: applying is
idempotent. It sleeps until the next schedule is due, a NOTIFY from the
schedules table, or the poll interval, whichever comes first.

It also re-sends a wake-up for rows stuck in dispatched/retrying well past their
due time (the database is the truth; a lost record is recovered from it).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
from kafka.errors import KafkaError
from pydantic import ValidationError

from flagsched.runtime.clients import make_producer
from flagsched.runtime.db.connect import DictConnection, connect
from flagsched.runtime.errors import ServiceUnavailable
from flagsched.runtime.logtext import printable
from flagsched.runtime.settings import Settings
from flagsched.runtime.telemetry.metrics import Metrics
from flagsched.runtime.telemetry.tracing import Tracing
from flagsched.runtime.waiting import wait_for
from flagsched.schemas.events import Priority, ScheduleDue, to_epoch_ms
from flagsched.schemas.headers import RecordHeaders
from flagsched.schemas.topics import TopicLayout

log = logging.getLogger(__name__)

CHANNEL = "flagsched_schedules"

# Due rows, and (pre-dispatch) normal rows due within the look-ahead window but at
# least one tier away: those go straight into the delay tier that fits, so a burst
# at midnight is already in Kafka when midnight comes. Rows due sooner than the
# smallest tier wait here until due; critical rows always go at their due time to
# the priority lane.
_CLAIM = """
SELECT id, flag_key, scheduled_at, priority FROM flag_schedules
 WHERE status = 'pending'
   AND scheduled_at <= now() + make_interval(secs => %(ahead)s)
   AND (scheduled_at <= now()
        OR (priority = 'normal' AND scheduled_at >= now() + make_interval(secs => %(tier)s)))
 ORDER BY scheduled_at, id
 LIMIT %(limit)s
 FOR UPDATE SKIP LOCKED
"""

# When the earliest normal and critical pending rows are due (index order, LIMIT 1).
_NEXT_DUE = """
SELECT EXTRACT(EPOCH FROM (SELECT scheduled_at FROM flag_schedules
         WHERE status = 'pending' AND priority = 'normal' ORDER BY scheduled_at LIMIT 1)
         - now()) AS normal,
       EXTRACT(EPOCH FROM (SELECT scheduled_at FROM flag_schedules
         WHERE status = 'pending' AND priority <> 'normal' ORDER BY scheduled_at LIMIT 1)
         - now()) AS critical
"""

# Wake-ups whose record went missing: sent again with the attempt the row expects.
_STUCK = """
SELECT id, flag_key, scheduled_at, priority, retry_count + 1 AS attempt,
       COALESCE(next_retry_at, scheduled_at) AS due_at
  FROM flag_schedules
 WHERE status IN ('dispatched', 'retrying')
   AND COALESCE(next_retry_at, scheduled_at) < now() - make_interval(secs => %(after)s)
   AND dispatched_at < now() - make_interval(secs => %(after)s)
 ORDER BY id
 LIMIT %(limit)s
 FOR UPDATE SKIP LOCKED
"""


_MARK_DISPATCHED = (
    "UPDATE flag_schedules SET status = 'dispatched', dispatched_at = now(),"
    " updated_at = now() WHERE id = ANY(%(ids)s)"
)
_MARK_RESENT = "UPDATE flag_schedules SET dispatched_at = now() WHERE id = ANY(%(ids)s)"
# A row that cannot be dispatched: dead at once, with the class and the reason (a
# finished row is exempt from the CHECKs of migration 0005, so this always passes).
_RETIRE = """
UPDATE flag_schedules SET status = 'dead', last_error_class = 'invalid_schedule',
       last_error = %(why)s, finished_at = now(), updated_at = now()
 WHERE id = %(id)s
"""


def _event(row: dict[str, Any], now: datetime) -> ScheduleDue:
    """The wake-up of ``row``; pydantic's ValidationError if the row breaks the contract."""
    return ScheduleDue(
        schedule_id=row["id"],
        flag_key=row["flag_key"],
        scheduled_at=row["scheduled_at"],
        priority=Priority(row["priority"]),
        dispatched_at=now,
    )


class Dispatcher:
    """Publishes due schedules; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        layout: TopicLayout,
        *,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self._tracing = tracing or Tracing()
        self._metrics = metrics
        self.layout = layout
        self._producer: Any = None
        self._conn: DictConnection | None = None
        self._listen: DictConnection | None = None
        self.dispatched_total = 0

    def run(self, stop: threading.Event) -> None:
        """Dispatch until ``stop`` is set; an outage of either service is waited out."""
        self._producer = wait_for(
            lambda: make_producer(self.settings),
            what="Kafka (FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS)",
            deadline_s=self.settings.startup_timeout_s,
            stop=stop,
        )
        log.info("dispatcher publishing to %s / %s", self.layout.due, self.layout.priority)
        last_sweep = 0.0
        try:
            while not stop.is_set():
                try:
                    self._connect(stop)
                    sent = self.dispatch_once()
                    swept = 0
                    if time.monotonic() - last_sweep > min(
                        30.0, self.settings.dispatch_stuck_after_s
                    ):
                        swept = self.sweep_stuck()
                        last_sweep = time.monotonic()
                    if self._metrics is not None:
                        self._metrics.observe_dispatched(sent)
                        self._metrics.observe_rewakes(swept)
                    if sent < self.settings.dispatch_batch_size:
                        self._wait(stop)
                except (
                    psycopg.OperationalError,
                    psycopg.InterfaceError,
                    KafkaError,
                    ServiceUnavailable,
                ) as exc:
                    # Rows stay pending (or dispatched) in the database: nothing is lost,
                    # at worst a record is published twice, which applying tolerates.
                    log.warning("dispatch round failed, reconnecting: %s", exc)
                    self._disconnect()
                except psycopg.Error as exc:
                    # Not an outage (a row the database cannot hand over, say): the
                    # round rolled back; the dispatcher stays up and tries again.
                    log.error("dispatch round failed: %s", printable(exc, 1000))
                    self._disconnect()
                    stop.wait(self.settings.dispatch_poll_interval_s)
        finally:
            self._producer.close(timeout=5)
            self._disconnect()

    def _connect(self, stop: threading.Event) -> None:
        if self._conn is not None and not self._conn.broken and not self._conn.closed:
            return
        dsn, timeout = self.settings.require_database_url(), self.settings.connect_timeout_s
        self._conn = wait_for(
            lambda: connect(dsn, timeout_s=timeout, autocommit=True),
            what="PostgreSQL (FLAGSCHED_DATABASE_URL)",
            deadline_s=self.settings.startup_timeout_s,
            stop=stop,
        )
        self._listen = connect(dsn, timeout_s=timeout, autocommit=True)
        self._listen.execute(f"LISTEN {CHANNEL}")

    def _disconnect(self) -> None:
        for conn in (self._conn, self._listen):
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    conn.close()
        self._conn = self._listen = None

    def dispatch_once(self) -> int:
        """Claim, publish and mark one batch; return how many were dispatched."""
        assert self._conn is not None
        with self._conn.transaction():
            rows = self._conn.execute(_CLAIM, self._window()).fetchall()
            if not rows:
                return 0
            # Marked before publishing (nothing is visible before the commit, which
            # comes after the broker's acknowledgement): a row the CHECKs refuse is
            # found before its record is sent.
            good = self._refuse_bad(rows, _MARK_DISPATCHED)
            self._publish([(ev, 1, r["scheduled_at"]) for r, ev in good])
        self.dispatched_total += len(good)
        log.debug("dispatched %d schedules", len(good))
        return len(rows)

    def _window(self) -> dict[str, float]:
        ahead = self.settings.dispatch_lookahead_s
        tier = self.layout.tiers_s[0]
        # no pre-dispatch when the window is shorter than the smallest tier
        return {
            "ahead": ahead if ahead >= tier else 0.0,
            "tier": tier,
            "limit": self.settings.dispatch_batch_size,
        }

    def sweep_stuck(self) -> int:
        """Re-send wake-ups for rows overdue by ``dispatch_stuck_after_s``."""
        assert self._conn is not None
        with self._conn.transaction():
            rows = self._conn.execute(
                _STUCK,
                {
                    "after": self.settings.dispatch_stuck_after_s,
                    "limit": self.settings.dispatch_batch_size,
                },
            ).fetchall()
            if rows:
                sent = self._refuse_bad(rows, _MARK_RESENT)
                self._publish([(ev, int(r["attempt"]), r["due_at"]) for r, ev in sent])
        for r in rows:
            log.warning(
                "schedule=%s flag=%s re-sent attempt %s: no progress past its due time",
                r["id"],
                r["flag_key"],
                r["attempt"],
            )
        return len(rows)

    def _refuse_bad(
        self, rows: list[dict[str, Any]], mark: str
    ) -> list[tuple[dict[str, Any], ScheduleDue]]:
        """Mark ``rows`` (``mark``: an UPDATE by ``ids``); those fit to send, with their events.

        A row that no event can be built from (its flag key breaks the FlagKey
        pattern), or that the table's CHECKs refuse to mark (a row from before
        migration 0005), is retired: dead, with its reason. The others go on.
        """
        assert self._conn is not None
        now = datetime.now(UTC)
        good: list[tuple[dict[str, Any], ScheduleDue]] = []
        refused: list[tuple[dict[str, Any], str]] = []
        for row in rows:
            try:
                good.append((row, _event(row, now)))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "row"
                refused.append((row, f"{where}: {first['msg']}"))
        try:
            with self._conn.transaction():  # savepoint
                self._conn.execute(mark, {"ids": [r["id"] for r, _ in good]})
        except psycopg.errors.IntegrityError:
            # One row at a time, to find the ones refused (rare: old rows only).
            fit = []
            for row, event in good:
                try:
                    with self._conn.transaction():
                        self._conn.execute(mark, {"ids": [row["id"]]})
                    fit.append((row, event))
                except psycopg.errors.IntegrityError as exc:
                    refused.append((row, f"{type(exc).__name__}: {exc}".splitlines()[0]))
            good = fit
        for row, why in refused:
            self._conn.execute(_RETIRE, {"id": row["id"], "why": why[:1024]})
            log.error(
                "schedule=%s flag=%s dead, not dispatched: %s",
                row["id"],
                printable(row["flag_key"]),
                printable(why),
            )
        return good

    def _publish(self, items: list[tuple[ScheduleDue, int, datetime]]) -> None:
        now = datetime.now(UTC)
        futures = []
        # The send spans stay open until the broker acknowledged (or failed) the batch.
        with contextlib.ExitStack() as spans:
            for event, attempt, due in items:
                topic = self._topic_for(event.priority, due, now)
                key = event.flag_key.encode()
                span = spans.enter_context(
                    self._tracing.send(
                        topic=topic,
                        key=key,
                        schedule_id=event.schedule_id,
                        flag_key=event.flag_key,
                        attempt=attempt,
                    )
                )
                headers = RecordHeaders(
                    attempt=attempt, due_ms=to_epoch_ms(due), traceparent=span.traceparent
                ).encode()
                futures.append(
                    self._producer.send(
                        topic, key=key, value=event.model_dump_json().encode(), headers=headers
                    )
                )
            self._producer.flush(timeout=self.settings.connect_timeout_s)
            for fut in futures:
                # Raises if the broker did not acknowledge: the transaction rolls back
                # and the rows stay pending for the next round.
                fut.get(timeout=self.settings.connect_timeout_s)

    def _next_claim_s(self, row: dict[str, Any]) -> float | None:
        """Seconds until the next pending row becomes claimable."""
        window = self._window()
        times = []
        if row.get("critical") is not None:
            times.append(float(row["critical"]))
        if row.get("normal") is not None:
            normal = float(row["normal"])
            # a row at least one tier away may be pre-dispatched before it is due
            times.append(normal - window["ahead"] if normal >= window["tier"] else normal)
        return max(0.0, min(times)) if times else None

    def _topic_for(self, priority: Priority, due: datetime, now: datetime) -> str:
        if priority is Priority.CRITICAL:
            return self.layout.priority
        # pre-dispatched: wait in the largest tier that fits; workers hold it until due
        ahead_s = (due - now).total_seconds()
        return (self.layout.tier_for_delay(ahead_s) if ahead_s > 0 else None) or self.layout.due

    def _wait(self, stop: threading.Event) -> None:
        assert self._conn is not None
        assert self._listen is not None
        with self._conn.transaction():
            row = self._conn.execute(_NEXT_DUE).fetchone()
        until_next = self._next_claim_s(row or {})
        wait_s = self.settings.dispatch_poll_interval_s
        if until_next is not None:
            wait_s = max(0.0, min(wait_s, until_next))
        if wait_s > 0 and not stop.is_set():
            for _ in self._listen.notifies(timeout=wait_s, stop_after=1):
                pass
