"""The worker: two consumers (priority lane and normal), one transactional producer.

Per loop turn: priority records first, then a poll of the normal consumer (due
and tier topics). Each record is processed by consumer/processor.py into an
outcome; consumer/outcome.py decides the action: hold the partition (paused and
sought back, a timer armed through the poll timeout), or publish tier / dead
letter / lifecycle records. Those and the source offsets are committed in one
Kafka transaction after the database commits; a crash in between is repaired
by the replay path of consumer/apply.py. Database outages open the circuit
breaker, which pauses every partition of every worker in the group
(consumer/coordination.py). The clients are in consumer/kafka_clients.py, the
rebalance listener in consumer/rebalance.py.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from flagsched.consumer.bookkeeping import AttemptContext
from flagsched.consumer.breaker import Breaker, BreakerConfig, DrainLimiter
from flagsched.consumer.coordination import BreakerCoordinator, BreakerHook
from flagsched.consumer.decode import Coordinates, coordinates
from flagsched.consumer.holds import Holds
from flagsched.consumer.kafka_clients import KafkaClients
from flagsched.consumer.kafka_compat import generation, group_settled, resume
from flagsched.consumer.lanes import PriorityLane
from flagsched.consumer.observe import observe, prepare
from flagsched.consumer.outcome import AttemptResult, OutRecord, Source, decide
from flagsched.consumer.processor import RecordProcessor, now_ms
from flagsched.consumer.rebalance import RebalanceListener
from flagsched.runtime.settings import Settings
from flagsched.runtime.telemetry.metrics import Metrics
from flagsched.runtime.telemetry.tracing import Tracing
from flagsched.schemas.topics import TopicLayout

log = logging.getLogger(__name__)

ResultHook = Callable[[AttemptResult, Coordinates], None]
Batch = dict[Any, list[Any]]
# While the priority group is not settled, poll it this long: kafka-python joins inside
# poll(), and at 10 ms the priority group churned through rebalances for tens of seconds
# (chaos runs). A settled member is polled without waiting: the loop turn is not
# lengthened by an idle priority lane.
_PRIORITY_POLL_MS = 50
# Consumer lag is sampled at most this often (a scrape is every few seconds at best;
# sampling after every poll cost ~3 % of a busy worker's CPU).
_LAG_SAMPLE_S = 1.0
# The longest the normal poll blocks: priority records arriving meanwhile wait this long.
_MAX_POLL_WAIT_MS = 100


def default_worker_id() -> str:
    """host-pid-random: unique per process, readable in logs and attempt rows."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Worker:
    """Consumes the due, priority and tier topics and applies schedules."""

    def __init__(
        self,
        settings: Settings,
        layout: TopicLayout,
        *,
        worker_id: str | None = None,
        on_result: ResultHook | None = None,
        on_breaker: BreakerHook | None = None,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.layout = layout
        configured = worker_id or settings.worker_id
        self.worker_id = configured or default_worker_id()
        #: A configured id is a stable identity: join as a static member with it. A
        #: generated one is new on every start, so static membership would only leave a
        #: ghost member behind for a session timeout after each crash.
        self.static = bool(configured) and settings.static_membership
        self._on_result = on_result
        self._metrics = metrics
        if metrics is not None:
            prepare(metrics)
        self.holds = Holds()
        self._lane = PriorityLane()
        #: Partitions this worker owns now (kept by the rebalance listeners).
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
        self._processor = RecordProcessor(
            settings,
            layout,
            AttemptContext(
                policy=settings.default_retry_policy(),
                worker_id=self.worker_id,
                lock_timeout_ms=settings.apply_lock_timeout_ms,
                statement_timeout_ms=settings.apply_statement_timeout_ms,
                error_message_max_bytes=settings.error_message_max_bytes,
            ),
            tracing,
        )
        self._clients = KafkaClients(settings, layout, self.worker_id, static=self.static)
        self._coordinator = BreakerCoordinator(
            settings,
            self.breaker,
            holds=self.holds,
            assigned=self.assigned,
            drain=self._drain,
            clients=self._clients,
            probe=self._processor.probe,
            on_breaker=on_breaker,
        )
        self.ready = threading.Event()
        #: When consumer lag was last sampled (time.monotonic()).
        self.lag_sampled = float("-inf")

    # --- lifecycle ---------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set; then finish the batch in hand and leave the group."""
        self._clients.start(stop, lambda consumer: RebalanceListener(self, consumer))
        log.info(
            "worker %s consuming %s as a %s member",
            self.worker_id,
            self.layout.consumed,
            "static" if self.static else "dynamic",
        )
        try:
            while not stop.is_set():
                self._turn(stop)
        finally:
            self._close()

    def _turn(self, stop: threading.Event) -> None:
        try:
            self._turn_once(stop)
        except KafkaError as exc:
            # A broker outage surfacing from poll(): the clients reconnect by themselves;
            # nothing was consumed that is not also uncommitted, so wait and go on.
            log.warning("kafka error in the poll loop, retrying: %s", exc)
            stop.wait(self.settings.infra_pause_s)

    def _turn_once(self, stop: threading.Event) -> None:
        self._coordinator.follow_control()
        self._coordinator.probe_if_due()
        priority, normal = self._clients.priority, self._clients.consumer
        # A short wait, not 0: kafka-python joins the group and rebalances inside poll().
        settled = group_settled(priority)
        urgent = priority.poll(timeout_ms=0 if settled else _PRIORITY_POLL_MS)
        self._release_holds()
        if urgent:
            self._handle(urgent, priority)
        waiting = self._lane.update(priority, normal, frozen=self.breaker.is_open)
        budget = self._drain.budget()
        if budget == 0:
            stop.wait(self._drain.wait_s())  # rate limit after an outage, on purpose
            return
        wait_ms = 0 if (urgent or waiting) else self._poll_wait_ms()
        batch = normal.poll(timeout_ms=wait_ms, max_records=budget)
        self.ready.set()
        self._sample(batch, urgent)
        self._release_holds()
        if batch:
            self._drain.spend(sum(len(r) for r in batch.values()))
            self._handle(batch, normal)

    def generations(self) -> dict[str, int | None]:
        """Per group this worker is a member of: the generation it last joined."""
        return {
            c.config["group_id"]: generation(c) for c in self._clients.consumers()
        }

    def _close(self) -> None:
        log.info("worker %s leaving the group", self.worker_id)
        for closer in (*self._clients.closers(), self._processor.drop_connection):
            try:
                closer()
            except Exception:  # closing is best effort; the group times us out anyway
                log.exception("error while closing")

    def _sample(self, batch: Batch, urgent: Batch) -> None:
        if self._metrics is not None:
            size = sum(len(r) for r in (*batch.values(), *urgent.values()))
            if size:
                self._metrics.observe_batch(size)
            now = time.monotonic()
            # Until every owned partition has been fetched once, sample every turn.
            due = now - self.lag_sampled >= _LAG_SAMPLE_S
            if due and self._metrics.sample_consumer_lag(self._clients.consumer):
                self.lag_sampled = now

    # --- breaker ---------------------------------------------------------------------
    def pause_all(self) -> None:
        """Pause every partition (breaker open); held records are re-judged on resume."""
        self._coordinator.pause_all()

    # --- holds -------------------------------------------------------------------
    def _poll_wait_ms(self) -> int:
        waits = [_MAX_POLL_WAIT_MS / 1000]
        wake = self.holds.next_wake_ms()
        if wake is not None:
            waits.append((wake - now_ms()) / 1000)
        probe = self.breaker.seconds_to_probe()
        if probe is not None:
            waits.append(probe)
        return max(0, int(min(waits) * 1000))

    def _release_holds(self) -> None:
        if self.breaker.is_open:
            return
        for tp in self.holds.expired(now_ms()):
            consumer = self._clients.owner(tp)
            if tp in consumer.assignment():
                resume(consumer, [tp])

    # --- a poll's records ----------------------------------------------------------
    def _handle(self, batch: Batch, consumer: Any) -> None:
        if self.breaker.is_open:  # records of a partition assigned while open
            self._rewind(batch, consumer)
            self.pause_all()
            return
        publish: list[OutRecord] = []
        offsets: dict[Any, OffsetAndMetadata] = {}
        paused_s: float | None = None
        for tp, handled in self._processor.process_batch(batch):
            for rec, result in handled:
                action = decide(
                    result,
                    self._source(rec),
                    self.layout,
                    infra_pause_s=self.settings.infra_pause_s,
                )
                self._report(result, rec)
                # A held or paused partition is sought back: what was fetched after
                # the record is fetched again when it resumes.
                if action.hold_until_ms is not None:
                    consumer.seek(tp, rec.offset)
                    consumer.pause(tp)
                    self.holds.hold(tp, action.hold_until_ms)
                    break
                if action.pause_partitions_s is not None:
                    consumer.seek(tp, rec.offset)  # retried in place: nothing was consumed
                    paused_s = action.pause_partitions_s
                    break
                publish.extend(action.publish)
                offsets[tp] = OffsetAndMetadata(rec.offset + 1, "", -1)
        if paused_s is not None:
            self._coordinator.infra_pause(paused_s)
        if offsets:
            assert self._clients.forwarder is not None
            if not self._clients.forwarder.commit(publish, offsets, consumer.group_metadata()):
                self._rewind(batch, consumer)

    def _rewind(self, batch: Batch, consumer: Any) -> None:
        # Everything in the batch is redone; the database side replays idempotently.
        assigned = consumer.assignment()
        for tp, records in batch.items():
            if tp in assigned:
                self.holds.forget([tp])
                consumer.seek(tp, records[0].offset)
                if not self.breaker.is_open:
                    resume(consumer, [tp])

    # --- one record ------------------------------------------------------------------
    def _source(self, rec: Any) -> Source:
        return Source(coordinates(rec), rec.key, rec.value, self.settings.group_id)

    def _report(self, result: AttemptResult, rec: Any) -> None:
        if result.outcome.database_answered:
            self.breaker.record_success()
        if self._metrics is not None:
            observe(self._metrics, result, self.layout.tier_label(rec.topic))
        if not result.outcome.is_routine:
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
