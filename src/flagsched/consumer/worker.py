"""The worker: one consumer in the group, one transactional producer, one DB connection.

Per poll: each record is decoded, judged against its due time, and either held
(partition paused and sought back, a timer armed through the poll timeout),
hopped to a smaller tier, or attempted in PostgreSQL. The resulting records
(tier, dead letter, lifecycle) and the source offsets are committed in one Kafka
transaction after the database commits; a crash in between is repaired by the
replay path of consumer/apply.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
from kafka import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from flagsched.clients import make_consumer, make_producer
from flagsched.consumer.apply import AttemptContext, run_attempt
from flagsched.consumer.classify import classify
from flagsched.consumer.decode import (
    Coordinates,
    Delivery,
    coordinates,
    decode_event,
    decode_headers,
)
from flagsched.consumer.holds import Holds, Timing, judge
from flagsched.consumer.outcome import Action, AttemptResult, Outcome, OutRecord, Source, decide
from flagsched.db.connect import DictConnection, connect
from flagsched.errors import PoisonRecord
from flagsched.retry.policy import RetryPolicy
from flagsched.schemas.error_classes import Disposition, ErrorClass
from flagsched.schemas.headers import DeadLetterReason, RecordHeaders
from flagsched.schemas.topics import TopicLayout
from flagsched.settings import Settings

log = logging.getLogger(__name__)

ResultHook = Callable[[AttemptResult, Coordinates], None]
_MAX_POLL_WAIT_MS = 500


def default_worker_id() -> str:
    """host-pid-random: unique per process, readable in logs and attempt rows."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, holds: Holds, assigned: set[Any]) -> None:
        self._holds = holds
        self._assigned = assigned

    def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
        # The next owner re-derives holds from the records' headers.
        revoked = list(revoked)
        self._holds.forget(revoked)
        self._assigned.difference_update(revoked)

    def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
        assigned = list(assigned)
        self._assigned.update(assigned)
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))


class Worker:
    """Consumes due and tier topics and applies schedules; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        layout: TopicLayout,
        *,
        worker_id: str | None = None,
        on_result: ResultHook | None = None,
    ) -> None:
        self.settings = settings
        self.layout = layout
        self.worker_id = worker_id or settings.worker_id or default_worker_id()
        self._on_result = on_result
        self._holds = Holds()
        #: Partitions this worker owns now (kept by the rebalance listener).
        self.assigned: set[Any] = set()
        self._ctx = AttemptContext(
            policy=RetryPolicy.from_settings(settings),
            worker_id=self.worker_id,
            lock_timeout_ms=settings.apply_lock_timeout_ms,
            statement_timeout_ms=settings.apply_statement_timeout_ms,
            error_message_max_bytes=settings.error_message_max_bytes,
        )
        self._conn: DictConnection | None = None
        self._consumer: Any = None
        self._producer: Any = None
        self.ready = threading.Event()

    # --- lifecycle ---------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set; then finish the batch in hand and leave the group."""
        self._consumer = make_consumer(self.settings, group_id=self.settings.group_id)
        self._consumer.subscribe(
            self.layout.consumed, listener=_Rebalance(self._holds, self.assigned)
        )
        self._producer = self._new_producer()
        log.info("worker %s consuming %s", self.worker_id, self.layout.consumed)
        try:
            while not stop.is_set():
                batch = self._consumer.poll(timeout_ms=self._poll_wait_ms())
                self.ready.set()
                self._release_holds()
                if batch:
                    self._handle(batch)
        finally:
            self._close()

    def _new_producer(self) -> Any:
        producer = make_producer(
            self.settings, transactional_id=f"{self.settings.group_id}.{self.worker_id}"
        )
        producer.init_transactions()
        return producer

    def _close(self) -> None:
        log.info("worker %s leaving the group", self.worker_id)
        for closer in (
            lambda: self._consumer.close(autocommit=False),
            lambda: self._producer.close(timeout=5),
            lambda: self._conn.close() if self._conn else None,
        ):
            try:
                closer()
            except Exception:  # closing is best effort; the group times us out anyway
                log.exception("error while closing")

    # --- holds -------------------------------------------------------------------
    def _poll_wait_ms(self) -> int:
        wake = self._holds.next_wake_ms()
        if wake is None:
            return _MAX_POLL_WAIT_MS
        return max(0, min(_MAX_POLL_WAIT_MS, wake - _now_ms()))

    def _release_holds(self) -> None:
        due = self._holds.expired(_now_ms())
        if due:
            assigned = self._consumer.assignment()
            self._consumer.resume(*[tp for tp in due if tp in assigned])

    def _hold(self, tp: Any, offset: int, until_ms: int) -> None:
        self._consumer.seek(tp, offset)
        self._consumer.pause(tp)
        self._holds.hold(tp, until_ms)

    # --- a poll's records ----------------------------------------------------------
    def _handle(self, batch: dict[Any, list[Any]]) -> None:
        publish: list[OutRecord] = []
        offsets: dict[Any, OffsetAndMetadata] = {}
        paused_all = False
        for tp, records in batch.items():
            if paused_all:
                self._consumer.seek(tp, records[0].offset)
                continue
            for rec in records:
                result = self._process(rec)
                action = decide(
                    result,
                    self._source(rec),
                    self.layout,
                    infra_pause_s=self.settings.infra_pause_s,
                )
                self._report(result, rec)
                if action.hold_until_ms is not None:
                    self._hold(tp, rec.offset, action.hold_until_ms)
                    break
                if action.pause_partitions_s is not None:
                    self._pause_everything(tp, rec.offset, action)
                    paused_all = True
                    break
                publish.extend(action.publish)
                offsets[tp] = OffsetAndMetadata(rec.offset + 1, "", -1)
        if offsets:
            self._commit(publish, offsets, batch)

    def _pause_everything(self, tp: Any, offset: int, action: Action) -> None:
        assert action.pause_partitions_s is not None
        until = _now_ms() + int(action.pause_partitions_s * 1000)
        self._consumer.seek(tp, offset)
        for part in self._consumer.assignment():
            self._consumer.pause(part)
            self._holds.hold(part, max(until, self._holds.until(part) or 0))

    def _commit(
        self,
        publish: list[OutRecord],
        offsets: dict[Any, OffsetAndMetadata],
        batch: dict[Any, list[Any]],
    ) -> None:
        try:
            self._producer.begin_transaction()
            for out in publish:
                self._producer.send(out.topic, key=out.key, value=out.value, headers=out.headers)
            self._producer.send_offsets_to_transaction(offsets, self._consumer.group_metadata())
            self._producer.commit_transaction()
        except KafkaError as exc:
            log.warning("kafka transaction failed (%s); rewinding %d partitions", exc, len(batch))
            self._abort()
            self._rewind(batch)

    def _abort(self) -> None:
        try:
            self._producer.abort_transaction()
        except Exception:
            log.warning("abort failed; recreating the transactional producer", exc_info=True)
            try:
                self._producer.close(timeout=1)
            finally:
                self._producer = self._new_producer()

    def _rewind(self, batch: dict[Any, list[Any]]) -> None:
        # Everything in the batch is redone; the database side replays idempotently.
        assigned = self._consumer.assignment()
        for tp, records in batch.items():
            if tp in assigned:
                self._holds.forget([tp])
                self._consumer.seek(tp, records[0].offset)
                self._consumer.resume(tp)

    # --- one record ------------------------------------------------------------------
    def _source(self, rec: Any) -> Source:
        return Source(coordinates(rec), rec.key, rec.value, self.settings.group_id)

    def _process(self, rec: Any) -> AttemptResult:
        try:
            headers = decode_headers(rec)
            event = decode_event(rec, max_bytes=self.settings.max_record_bytes)
        except PoisonRecord as exc:
            return _poison(rec, exc)
        verdict = judge(self.layout, rec.topic, rec.timestamp, headers, _now_ms())
        if verdict.timing is Timing.HOLD:
            return AttemptResult(Outcome.HOLD, headers.attempt, hold_until_ms=verdict.until_ms)
        if verdict.timing is Timing.HOP:
            assert verdict.hop_tier_s is not None
            return AttemptResult(
                Outcome.HOP,
                headers.attempt,
                event.schedule_id,
                event.flag_key,
                hop_topic=self.layout.tier_topic(verdict.hop_tier_s),
                carried=headers,
            )
        return self._attempt(Delivery(event, headers, coordinates(rec)))

    def _attempt(self, delivery: Delivery) -> AttemptResult:
        n = delivery.headers.attempt
        try:
            return run_attempt(self._db(), delivery, self._ctx)
        except Exception as exc:
            verdict = classify(exc)
            if verdict.disposition is Disposition.PERMANENT:
                return AttemptResult(
                    Outcome.POISON,
                    n,
                    delivery.event.schedule_id,
                    delivery.event.flag_key,
                    error_class=verdict.error_class.value,
                    error_message=str(exc)[:1024],
                    dlt_reason=DeadLetterReason.PERMANENT,
                    due_ms=delivery.headers.due_ms,
                )
            # Infrastructure, or an error outside the attempt's savepoint: no attempt
            # was recorded, so none is consumed; the record is retried in place.
            log.warning(
                "schedule %s attempt %s paused in place (%s): %s",
                delivery.event.schedule_id,
                n,
                verdict.error_class,
                exc,
            )
            self._drop_connection()
            return AttemptResult(
                Outcome.PAUSE, n, delivery.event.schedule_id, error_class=verdict.error_class.value
            )

    def _db(self) -> DictConnection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = connect(
                self.settings.require_database_url(), timeout_s=self.settings.connect_timeout_s
            )
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def _report(self, result: AttemptResult, rec: Any) -> None:
        if result.outcome not in (Outcome.HOLD, Outcome.DROP, Outcome.APPLIED, Outcome.HOP):
            log.info(
                "schedule=%s flag=%s attempt=%s outcome=%s error=%s topic=%s partition=%s "
                "offset=%s",
                result.schedule_id,
                result.flag_key,
                result.attempt,
                result.outcome.value,
                result.error_class,
                rec.topic,
                rec.partition,
                rec.offset,
            )
        if self._on_result is not None:
            self._on_result(result, coordinates(rec))


def _poison(rec: Any, exc: PoisonRecord) -> AttemptResult:
    attempt = 1
    with contextlib.suppress(PoisonRecord):
        attempt = RecordHeaders.decode(rec.headers).attempt
    return AttemptResult(
        Outcome.POISON,
        attempt,
        error_class=ErrorClass.POISON.value,
        error_message=str(exc)[:1024],
        dlt_reason=DeadLetterReason.POISON,
    )


def _now_ms() -> int:
    return int(time.time() * 1000)
