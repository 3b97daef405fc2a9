"""The worker: one consumer in the group, one transactional producer, one DB connection.

Per poll: each record is decoded, judged against its due time, and either held
(partition paused and sought back, a timer armed through the poll timeout),
hopped to a smaller tier, or attempted in PostgreSQL. The resulting records
(tier, dead letter, lifecycle) and the source offsets are committed in one Kafka
transaction after the database commits; a crash in between is repaired by the
replay path of consumer/apply.py. Database outages open the circuit breaker,
which pauses every partition of every worker in the group.
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

from kafka import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from flagsched.clients import make_consumer, make_producer
from flagsched.consumer.apply import AttemptContext, run_attempt
from flagsched.consumer.breaker import Breaker, BreakerConfig, DrainLimiter
from flagsched.consumer.classify import classify
from flagsched.consumer.control import ControlChannel
from flagsched.consumer.decode import (
    Coordinates,
    Delivery,
    coordinates,
    decode_event,
    decode_headers,
)
from flagsched.consumer.holds import Holds, Timing, judge
from flagsched.consumer.outcome import AttemptResult, Outcome, OutRecord, Source, decide
from flagsched.consumer.txn import TransactionalForwarder
from flagsched.db.connect import DictConnection, connect
from flagsched.errors import PoisonRecord, ServiceUnavailable
from flagsched.retry.policy import RetryPolicy
from flagsched.retry.waiting import wait_for
from flagsched.schemas.error_classes import Disposition, ErrorClass
from flagsched.schemas.events import BreakerState
from flagsched.schemas.headers import DeadLetterReason, RecordHeaders
from flagsched.schemas.topics import TopicLayout
from flagsched.settings import Settings
from flagsched.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

ResultHook = Callable[[AttemptResult, Coordinates], None]
BreakerHook = Callable[[BreakerState], None]
_MAX_POLL_WAIT_MS = 500


def default_worker_id() -> str:
    """host-pid-random: unique per process, readable in logs and attempt rows."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self._w = worker

    def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
        # The next owner re-derives holds from the records' headers.
        revoked = list(revoked)
        self._w.holds.forget(revoked)
        self._w.assigned.difference_update(revoked)

    def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
        assigned = list(assigned)
        self._w.assigned.update(assigned)
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
        on_breaker: BreakerHook | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.layout = layout
        self.worker_id = worker_id or settings.worker_id or default_worker_id()
        self._on_result = on_result
        self._on_breaker = on_breaker
        self._metrics = metrics
        self.holds = Holds()
        #: Partitions this worker owns now (kept by the rebalance listener).
        self.assigned: set[Any] = set()
        self.breaker = Breaker(
            BreakerConfig(
                threshold=settings.breaker_failure_threshold,
                probe_base_s=settings.breaker_probe_base_s,
                probe_cap_s=settings.breaker_probe_cap_s,
                stale_s=settings.breaker_stale_s,
            ),
            seed=hash(self.worker_id) & 0xFFFF,
        )
        self._drain = DrainLimiter(settings.breaker_drain_rate_per_s, settings.breaker_drain_s)
        self._ctx = AttemptContext(
            policy=RetryPolicy.from_settings(settings),
            worker_id=self.worker_id,
            lock_timeout_ms=settings.apply_lock_timeout_ms,
            statement_timeout_ms=settings.apply_statement_timeout_ms,
            error_message_max_bytes=settings.error_message_max_bytes,
        )
        self._conn: DictConnection | None = None
        self._consumer: Any = None
        self._forwarder: TransactionalForwarder | None = None
        self._control: ControlChannel | None = None
        self.ready = threading.Event()

    # --- lifecycle ---------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set; then finish the batch in hand and leave the group."""
        self._start(stop)
        log.info("worker %s consuming %s", self.worker_id, self.layout.consumed)
        try:
            while not stop.is_set():
                self._follow_control()
                self._probe_if_due()
                budget = self._drain.budget()
                if budget == 0:
                    stop.wait(self._drain.wait_s())  # rate limit after an outage, on purpose
                    continue
                batch = self._consumer.poll(timeout_ms=self._poll_wait_ms(), max_records=budget)
                self.ready.set()
                self._sample(batch)
                self._release_holds()
                if batch:
                    self._drain.spend(sum(len(r) for r in batch.values()))
                    self._handle(batch)
        finally:
            self._close()

    def _start(self, stop: threading.Event) -> None:
        deadline = self.settings.startup_timeout_s
        self._consumer = wait_for(
            lambda: make_consumer(self.settings, group_id=self.settings.group_id),
            what="Kafka (FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS)",
            deadline_s=deadline,
            stop=stop,
        )
        self._consumer.subscribe(self.layout.consumed, listener=_Rebalance(self))
        self._forwarder = wait_for(
            self._new_forwarder, what="Kafka transactions", deadline_s=deadline, stop=stop
        )
        self._control = wait_for(
            lambda: ControlChannel(self.settings, self.layout, self.worker_id),
            what="the control topic",
            deadline_s=deadline,
            stop=stop,
        )

    def _new_forwarder(self) -> TransactionalForwarder:
        tid = f"{self.settings.group_id}.{self.worker_id}"
        try:
            return TransactionalForwarder(
                lambda: make_producer(
                    self.settings,
                    transactional_id=tid,
                    transaction_timeout_ms=self.settings.transaction_timeout_ms,
                )
            )
        except KafkaError as exc:
            raise ServiceUnavailable(f"cannot start transactional producer {tid}: {exc}") from exc

    def _close(self) -> None:
        log.info("worker %s leaving the group", self.worker_id)
        for closer in (
            lambda: self._consumer.close(autocommit=False),
            lambda: self._forwarder.close() if self._forwarder else None,
            lambda: self._control.close() if self._control else None,
            lambda: self._conn.close() if self._conn else None,
        ):
            try:
                closer()
            except Exception:  # closing is best effort; the group times us out anyway
                log.exception("error while closing")

    def _sample(self, batch: dict[Any, list[Any]]) -> None:
        if self._metrics is not None:
            if batch:
                self._metrics.observe_batch(sum(len(r) for r in batch.values()))
            self._metrics.sample_consumer_lag(self._consumer)

    # --- breaker -------------------------------------------------------------------
    def _follow_control(self) -> None:
        assert self._control is not None
        for event in self._control.poll():
            if event.state is BreakerState.OPEN and not self.breaker.is_open:
                log.warning("breaker opened by %s: %s; pausing", event.worker_id, event.reason)
                self.breaker.open_remote()
                self._pause_all()
            elif event.state is BreakerState.CLOSED and self.breaker.close_remote():
                log.warning("breaker closed by %s; resuming", event.worker_id)
                self._resume_all()

    def _probe_if_due(self) -> None:
        if not self.breaker.probe_due():
            return
        self._notify_breaker()
        try:
            # A fresh autocommit connection: the probe must not leave a transaction open
            # on the connection the attempts use.
            self._drop_connection()
            dsn = self.settings.require_database_url()
            with connect(dsn, timeout_s=self.settings.connect_timeout_s, autocommit=True) as c:
                c.execute("SELECT 1")
            ok = True
        except Exception as exc:
            log.warning("breaker probe failed: %s", exc)
            ok = False
        self.breaker.probe_result(ok)
        if ok:
            assert self._control is not None
            self._control.publish(BreakerState.CLOSED, "probe succeeded")
            self._resume_all()

    def _pause_all(self) -> None:
        # Holds are forgotten: their records are re-fetched and re-judged on resume.
        self.holds.forget(list(self.assigned))
        for tp in self._consumer.assignment():
            self._consumer.pause(tp)
        self._notify_breaker()

    def _resume_all(self) -> None:
        self._consumer.resume(*self._consumer.assignment())
        self._drain.start()
        self._notify_breaker()

    def _notify_breaker(self) -> None:
        if self._on_breaker is not None:
            self._on_breaker(self.breaker.state)

    # --- holds -------------------------------------------------------------------
    def _poll_wait_ms(self) -> int:
        waits = [_MAX_POLL_WAIT_MS / 1000]
        wake = self.holds.next_wake_ms()
        if wake is not None:
            waits.append((wake - _now_ms()) / 1000)
        probe = self.breaker.seconds_to_probe()
        if probe is not None:
            waits.append(probe)
        return max(0, int(min(waits) * 1000))

    def _release_holds(self) -> None:
        if self.breaker.is_open:
            return
        due = self.holds.expired(_now_ms())
        if due:
            assigned = self._consumer.assignment()
            self._consumer.resume(*[tp for tp in due if tp in assigned])

    def _hold(self, tp: Any, offset: int, until_ms: int) -> None:
        self._consumer.seek(tp, offset)
        self._consumer.pause(tp)
        self.holds.hold(tp, until_ms)

    # --- a poll's records ----------------------------------------------------------
    def _handle(self, batch: dict[Any, list[Any]]) -> None:
        if self.breaker.is_open:  # records of a partition assigned while open
            self._rewind(batch)
            self._pause_all()
            return
        publish: list[OutRecord] = []
        offsets: dict[Any, OffsetAndMetadata] = {}
        stopped = False
        for tp, records in batch.items():
            if stopped:
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
                    self._consumer.seek(tp, rec.offset)
                    self._infra_pause(action.pause_partitions_s)
                    stopped = True
                    break
                publish.extend(action.publish)
                offsets[tp] = OffsetAndMetadata(rec.offset + 1, "", -1)
        if offsets:
            assert self._forwarder is not None
            if not self._forwarder.commit(publish, offsets, self._consumer.group_metadata()):
                self._rewind(batch)

    def _infra_pause(self, pause_s: float) -> None:
        if self.breaker.record_failure():
            assert self._control is not None
            reason = f"{self.settings.breaker_failure_threshold} database failures in a row"
            self._pause_all()
            try:
                self._control.publish(BreakerState.OPEN, reason)
            except KafkaError as exc:
                log.warning("could not publish breaker state: %s", exc)
            return
        if self.breaker.is_open:
            self._pause_all()
            return
        until = _now_ms() + int(pause_s * 1000)
        for tp in self._consumer.assignment():
            self._consumer.pause(tp)
            self.holds.hold(tp, max(until, self.holds.until(tp) or 0))

    def _rewind(self, batch: dict[Any, list[Any]]) -> None:
        # Everything in the batch is redone; the database side replays idempotently.
        assigned = self._consumer.assignment()
        for tp, records in batch.items():
            if tp in assigned:
                self.holds.forget([tp])
                self._consumer.seek(tp, records[0].offset)
                if not self.breaker.is_open:
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
            result = run_attempt(self._db(), delivery, self._ctx)
        except Exception as exc:
            verdict = classify(exc)
            if verdict.disposition is Disposition.PERMANENT:
                self.breaker.record_success()
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
                "schedule=%s attempt=%s paused in place (%s): %s",
                delivery.event.schedule_id,
                n,
                verdict.error_class,
                exc,
            )
            self._drop_connection()
            return AttemptResult(
                Outcome.PAUSE, n, delivery.event.schedule_id, error_class=verdict.error_class.value
            )
        self.breaker.record_success()
        return result

    def _db(self) -> DictConnection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            # autocommit: every unit of work is an explicit `conn.transaction()` block
            self._conn = connect(
                self.settings.require_database_url(),
                timeout_s=self.settings.connect_timeout_s,
                autocommit=True,
            )
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # a broken connection may fail to close; it is gone either way
                log.debug("closing a broken connection failed", exc_info=True)
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
