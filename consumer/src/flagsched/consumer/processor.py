"""One record to one outcome: decode, judge its due time, attempt it in PostgreSQL.

Holds no Kafka client: the worker owns consuming and committing; this owns the
database connection and the mapping of failures to outcomes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from contextlib import AbstractContextManager, ExitStack
from typing import Any, assert_never

from flagsched.consumer.apply import run_batch
from flagsched.consumer.bookkeeping import AttemptContext
from flagsched.consumer.classify import classify
from flagsched.consumer.decode import Delivery, coordinates, decode_event, decode_headers
from flagsched.consumer.holds import Timing, judge, latest_due_ms, partition_wake_ms, rotation_tier
from flagsched.consumer.isolate import paused, run_isolated
from flagsched.consumer.jsonb import install as read_json_safely
from flagsched.consumer.results import (
    Applied,
    Attempted,
    AttemptResult,
    Cancelled,
    DeadLettered,
    Deferred,
    Dropped,
    Held,
    Hopped,
    Paused,
    Poison,
    RetryScheduled,
    Superseded,
    facts,
)
from flagsched.runtime.db.connect import DictConnection, connect
from flagsched.runtime.errors import PoisonRecord
from flagsched.runtime.logtext import printable
from flagsched.runtime.settings import Settings
from flagsched.runtime.telemetry.tracing import AttemptSpan, Tracing
from flagsched.schemas.error_classes import ErrorClass
from flagsched.schemas.error_message import ERROR_MESSAGE_MAX_BYTES, truncate_utf8
from flagsched.schemas.headers import DeadLetterReason, RecordHeaders
from flagsched.schemas.topics import TopicLayout

log = logging.getLogger(__name__)

Handled = tuple[Any, AttemptResult]  # (record, its outcome)
Span = AttemptSpan | None


class RecordProcessor:
    """Turns consumed records into results (consumer/results.py)."""

    def __init__(
        self,
        settings: Settings,
        layout: TopicLayout,
        ctx: AttemptContext,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.layout = layout
        self.ctx = ctx
        self.tracing = tracing or Tracing()
        self._conn: DictConnection | None = None

    def judge(self, rec: Any) -> AttemptResult | Delivery:
        """Decode and time one record: a final outcome, or a Delivery due for an attempt.

        A record that must wait is not decoded beyond its headers: a held partition is
        judged again and again until it wakes, and its payload is checked (a malformed
        one dead-lettered as poison) when it is due, hops or is rotated.
        """
        try:
            headers = decode_headers(rec)
        except PoisonRecord as exc:
            return _poison(rec, exc)
        now = now_ms()
        latest = latest_due_ms(self.layout, rec.topic, now, self.settings.dispatch_lookahead_s)
        if headers.due_ms > latest:
            # Held until then, it would block every record behind it in its partition.
            late_s = (headers.due_ms - now) / 1000
            return _poison(
                rec,
                PoisonRecord(
                    f"due in {late_s:.0f}s, beyond what {rec.topic}"
                    f" may carry ({(latest - now) / 1000:.0f}s)"
                ),
            )
        verdict = judge(self.layout, rec.topic, rec.timestamp, headers, now)
        if verdict.timing is Timing.HOLD:
            return Held(attempt=headers.attempt, until_ms=verdict.until_ms, carried=headers)
        try:
            event = decode_event(rec, max_bytes=self.settings.max_record_bytes)
        except PoisonRecord as exc:
            return _poison(rec, exc)
        if verdict.timing is Timing.HOP:
            assert verdict.hop_tier_s is not None
            return Hopped(
                attempt=headers.attempt,
                schedule_id=event.schedule_id,
                flag_key=event.flag_key,
                topic=self.layout.tier_topic(verdict.hop_tier_s),
                carried=headers,
            )
        return Delivery(event, headers, coordinates(rec))

    def judge_partition(self, records: list[Any]) -> list[tuple[Any, AttemptResult | Delivery]]:
        """Verdicts for one partition's records, in offset order, ending at a HOLD if any.

        Due and priority topics: the list stops at the first HOLD. Tier topics: a record
        with less than the smallest tier left waits for its due time, and a hop for
        sub-tier time wakes at its due time, so a tier partition can hold a record that
        wakes later than one behind it. There, every fetched record is judged: a held
        record ahead of one that is ready is *rotated* (re-published to the tier that
        fits its remaining time, see holds.rotation_tier) instead of blocking it, and
        the partition is held at the first of the remaining records until the earliest
        wake among them, not only the first one's. A partition of the smallest tier is
        fetched again at least every holds.SMALLEST_TIER_RECHECK_MS: a record appended to it
        meanwhile may be due sooner than any record fetched so far.
        """
        judged: list[tuple[Any, AttemptResult | Delivery]] = []
        for rec in records:
            verdict = self.judge(rec)
            judged.append((rec, verdict))
            if isinstance(verdict, Held) and rec.topic not in self.layout.tier_topics:
                return judged
        ready = [i for i, (_, v) in enumerate(judged) if not isinstance(v, Held)]
        last = ready[-1] if ready else -1
        now = now_ms()
        out: list[tuple[Any, AttemptResult | Delivery]] = [
            (r, self._rotate(r, v, now) if isinstance(v, Held) else v)
            for r, v in judged[: last + 1]
        ]
        # Everything after the last ready record is held.
        rest = [(r, v) for r, v in judged[last + 1 :] if isinstance(v, Held)]
        if rest:
            first_rec, first = rest[0]
            wakes = (v.until_ms for _, v in rest)
            until = partition_wake_ms(self.layout, first_rec.topic, wakes, now)
            out.append((first_rec, dataclasses.replace(first, until_ms=until)))
        return out

    def _rotate(self, rec: Any, held: Held, now: int) -> Hopped | Poison:
        try:
            event = decode_event(rec, max_bytes=self.settings.max_record_bytes)
        except PoisonRecord as exc:
            return _poison(rec, exc)
        tier = rotation_tier(self.layout, held.carried.due_ms, now)
        return Hopped(
            attempt=held.attempt,
            schedule_id=event.schedule_id,
            flag_key=event.flag_key,
            topic=self.layout.tier_topic(tier),
            carried=held.carried,
        )

    def process_batch(self, batch: dict[Any, list[Any]]) -> list[tuple[Any, list[Handled]]]:
        """Outcomes of a poll's records, per partition in offset order.

        A partition's list ends at a HOLD (later records wait behind it; see
        :meth:`judge_partition`). Every due record is attempted in one database
        transaction (apply.run_batch).
        """
        # One span per judged record, open until the batch's outcomes are known.
        with ExitStack() as spans:
            judged: list[tuple[Any, list[tuple[Any, AttemptResult | Delivery, Span]]]] = []
            due: list[Delivery] = []
            for tp, records in batch.items():
                items: list[tuple[Any, AttemptResult | Delivery, Span]] = []
                for rec, verdict in self.judge_partition(records):
                    if isinstance(verdict, Held):
                        # Not an attempt: no span (a held record is judged again on wake).
                        items.append((rec, verdict, None))
                        break
                    span = spans.enter_context(self._span(rec, verdict))
                    if isinstance(verdict, Delivery) and span.trace_id:
                        verdict = dataclasses.replace(verdict, trace_id=span.trace_id)
                    items.append((rec, verdict, span))
                    if isinstance(verdict, Delivery):
                        due.append(verdict)
                judged.append((tp, items))
            done = iter(self._attempt_all(due))
            return [
                (
                    tp,
                    [
                        (rec, _traced(next(done) if isinstance(v, Delivery) else v, span))
                        for rec, v, span in items
                    ],
                )
                for tp, items in judged
            ]

    def _span(
        self, rec: Any, verdict: AttemptResult | Delivery
    ) -> AbstractContextManager[AttemptSpan]:
        # The headers judge() decoded already (a hop carries them; poison has none).
        headers: RecordHeaders | None = None
        if isinstance(verdict, Delivery):
            headers = verdict.headers
        elif isinstance(verdict, Hopped):
            headers = verdict.carried
        priority = rec.topic == self.layout.priority
        return self.tracing.process(
            topic=rec.topic,
            partition=rec.partition,
            offset=rec.offset,
            key=rec.key,
            group=f"{self.settings.group_id}.priority" if priority else self.settings.group_id,
            headers=headers,
            schedule_id=None,  # known once judged: set by _traced
            flag_key=None,
            attempt=headers.attempt if headers else None,
            tier=self.layout.tier_label(rec.topic),
        )

    def _attempt_all(self, due: list[Delivery]) -> list[Attempted | Paused]:
        if not due:
            return []
        try:
            return list(run_batch(self._db(), due, self.ctx))
        except Exception as exc:
            verdict = classify(exc)
            if not verdict.pauses:
                # One schedule's odd row or record, not the database: the others apply.
                log.warning(
                    "batch of %d failed (%s: %s); applying it one schedule at a time",
                    len(due),
                    verdict.error_class,
                    type(exc).__name__,
                )
                results = run_isolated(self._db(), due, self.ctx)
                if any(isinstance(r, Paused) for r in results):
                    self.drop_connection()
                return results
            # Infrastructure: the whole batch rolled back, no attempt was recorded, so
            # none is consumed; retried in place.
            log.warning(
                "batch of %d paused in place (%s): %s",
                len(due),
                verdict.error_class,
                printable(exc, 500),
            )
            self.drop_connection()
            return [paused(d, verdict) for d in due]

    def probe(self) -> bool:
        """The breaker's half-open probe: can a fresh connection run a query?"""
        # A fresh autocommit connection: the probe must not leave a transaction open
        # on the connection the attempts use.
        self.drop_connection()
        try:
            with connect(
                self.settings.require_database_url(),
                timeout_s=self.settings.connect_timeout_s,
                autocommit=True,
            ) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:
            log.warning("breaker probe failed: %s", exc)
            return False
        return True

    def _db(self) -> DictConnection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            # autocommit: every unit of work is an explicit `conn.transaction()` block
            self._conn = connect(
                self.settings.require_database_url(),
                timeout_s=self.settings.connect_timeout_s,
                autocommit=True,
            )
            read_json_safely(self._conn)
        return self._conn

    def drop_connection(self) -> None:
        """Close the attempt connection (it is reopened on the next attempt)."""
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # a broken connection may fail to close; it is gone either way
                log.debug("closing a broken connection failed", exc_info=True)
            self._conn = None


def _poison(rec: Any, exc: PoisonRecord) -> Poison:
    # The attempt and due time the record carried, when its headers were readable.
    headers = None
    with contextlib.suppress(PoisonRecord):
        headers = RecordHeaders.decode(rec.headers)
    return Poison(
        attempt=headers.attempt if headers else 1,
        error_class=ErrorClass.POISON.value,
        error_message=truncate_utf8(str(exc), ERROR_MESSAGE_MAX_BYTES),
        reason=DeadLetterReason.POISON,
        due_ms=headers.due_ms if headers else None,
    )


def _traced(result: AttemptResult, span: Span) -> AttemptResult:
    """Finish the attempt's span; every record sent because of it carries its traceparent."""
    if span is None:
        return result
    seen = facts(result)
    span.annotate(seen.schedule_id, seen.flag_key, result.attempt)
    span.finish(
        result.outcome.value,
        failed=result.outcome.is_failure,
        error_class=seen.error_class,
        error_message=seen.error_message,
        lateness_ms=seen.lateness_ms,
    )
    if span.traceparent is None:
        return result
    return _with_traceparent(result, span.traceparent)


def _with_traceparent(result: AttemptResult, traceparent: str) -> AttemptResult:
    match result:
        case Applied() | RetryScheduled() | DeadLettered() | Superseded() | Cancelled() | Poison():
            return dataclasses.replace(result, traceparent=traceparent)
        case Hopped():
            # A hop forwards the headers it carries: they name this attempt too.
            carried = result.carried.model_copy(update={"traceparent": traceparent})
            return dataclasses.replace(result, carried=carried)
        case Deferred():
            # It goes round a tier: the record sent carries this attempt's trace.
            carried = result.carried.model_copy(update={"traceparent": traceparent})
            return dataclasses.replace(result, carried=carried)
        case Dropped() | Paused() | Held():
            return result  # nothing is sent because of it
        case _:
            assert_never(result)


def now_ms() -> int:
    """Wall-clock epoch milliseconds (due times are absolute)."""
    return int(time.time() * 1000)
