"""One lane of a worker: one consumer, its own poll loop, database connection and
transactional producer.

A worker runs two lanes in two threads (consumer/worker.py): the normal lane (the
due and tier topics, group ``<group>``) and the priority lane (the priority topic,
group ``<group>.priority``). Each polls its own consumer, so a long normal batch
never delays the priority group's heartbeats, joins or rebalances, nor a critical
record (consumer/lanes.py couples them: the normal lane pauses while priority work
waits).

Per loop turn: a poll; each record is processed by consumer/processor.py into an
outcome; consumer/outcome.py decides the action: hold the partition (paused and
sought back, a timer armed through the poll timeout), or publish tier / dead
letter / lifecycle records. Those and the source offsets are committed in one
Kafka transaction after the database commits; a crash in between is repaired by
the replay path of consumer/apply.py. Database outages open the circuit breaker,
which pauses every partition of every lane in the group (consumer/coordination.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from flagsched.consumer.bookkeeping import AttemptContext
from flagsched.consumer.breaker import Breaker, BreakerConfig, DrainLimiter
from flagsched.consumer.coordination import BreakerCoordinator, BreakerHook
from flagsched.consumer.decode import Coordinates, coordinates
from flagsched.consumer.holds import Holds
from flagsched.consumer.kafka_clients import KafkaClients, Lane
from flagsched.consumer.kafka_compat import generation, leads, poll, resume
from flagsched.consumer.lanes import PriorityGate, PrioritySignal, backlog
from flagsched.consumer.observe import observe, prepare
from flagsched.consumer.outcome import OutRecord, Source, decide
from flagsched.consumer.processor import RecordProcessor, now_ms
from flagsched.consumer.rebalance import RebalanceListener
from flagsched.consumer.results import AttemptResult, facts
from flagsched.runtime.settings import Settings
from flagsched.runtime.telemetry.metrics import Metrics
from flagsched.runtime.telemetry.tracing import Tracing
from flagsched.schemas.topics import TopicLayout

log = logging.getLogger(__name__)

ResultHook = Callable[[AttemptResult, Coordinates], None]
Batch = dict[Any, list[Any]]
# Consumer lag is sampled at most this often (a scrape is every few seconds at best;
# sampling after every poll cost ~3 % of a busy worker's CPU).
_LAG_SAMPLE_S = 1.0
# The longest a poll blocks: a hold that expires meanwhile, or a breaker probe, waits
# this long at most. A record that arrives ends the wait at once.
_MAX_POLL_WAIT_MS = 100
# While the normal lane is paused for priority work: how long it waits in poll before
# it looks at the priority signal again.
_GATED_POLL_MS = 20


class LaneWorker:
    """Consumes one lane's topics and applies their schedules."""

    def __init__(
        self,
        settings: Settings,
        layout: TopicLayout,
        lane: Lane,
        signal: PrioritySignal,
        *,
        worker_id: str,
        static: bool,
        on_result: ResultHook | None = None,
        on_breaker: BreakerHook | None = None,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.layout = layout
        self.lane = lane
        self.worker_id = worker_id
        self._signal = signal
        self._gate = PriorityGate(signal)
        self._on_result = on_result
        self._metrics = metrics
        if metrics is not None:
            prepare(metrics)
        self.holds = Holds()
        #: Partitions this lane owns now (kept by the rebalance listener).
        self.assigned: set[Any] = set()
        self.breaker = Breaker(
            BreakerConfig(
                threshold=settings.breaker_failure_threshold,
                probe_base_s=settings.breaker_probe_base_s,
                probe_cap_s=settings.breaker_probe_cap_s,
                stale_s=settings.breaker_stale_s,
            ),
            seed=hash((worker_id, lane.value)) & 0xFFFF,
        )
        self._drain = DrainLimiter(settings.breaker_drain_rate_per_s, settings.breaker_drain_s)
        self._processor = RecordProcessor(
            settings,
            layout,
            AttemptContext(
                policy=settings.default_retry_policy(),
                worker_id=worker_id,
                lock_timeout_ms=settings.apply_lock_timeout_ms,
                statement_timeout_ms=settings.apply_statement_timeout_ms,
                error_message_max_bytes=settings.error_message_max_bytes,
            ),
            tracing,
        )
        self._clients = KafkaClients(settings, layout, worker_id, lane=lane, static=static)
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
        self._generation: int | None = None
        #: When consumer lag was last sampled (time.monotonic()).
        self.lag_sampled = float("-inf")

    # --- lifecycle ---------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set; then finish the batch in hand and leave the group."""
        self._clients.start(stop, lambda consumer: RebalanceListener(self, consumer))
        log.info("worker %s %s lane consuming %s", self.worker_id, self.lane.value, self.topics)
        try:
            while not stop.is_set():
                self._turn(stop)
        finally:
            if self.lane is Lane.PRIORITY:
                self._signal.set_busy(False)  # never leave the normal lane paused
            self._close()

    @property
    def topics(self) -> list[str]:
        """The topics this lane consumes."""
        return self._clients.topics

    def generation(self) -> tuple[str, int | None]:
        """This lane's group and the generation it last joined."""
        return self._clients.group, generation(self._clients.consumer)

    def leads(self) -> tuple[str, bool | None]:
        """This lane's group and whether this lane computed its current assignment."""
        return self._clients.group, leads(self._clients.consumer)

    def _turn(self, stop: threading.Event) -> None:
        try:
            self._turn_once(stop)
        except KafkaError as exc:
            # A broker outage surfacing from poll(): the clients reconnect by themselves;
            # nothing was consumed that is not also uncommitted, so wait and go on.
            log.warning("kafka error in the %s poll loop, retrying: %s", self.lane.value, exc)
            stop.wait(self.settings.infra_pause_s)

    def _turn_once(self, stop: threading.Event) -> None:
        self._coordinator.follow_control()
        self._coordinator.probe_if_due()
        consumer = self._clients.consumer
        self._release_holds()
        gated = False
        if self.lane is Lane.NORMAL:
            gated = self._gate.update(consumer, frozen=self.breaker.is_open)
        budget = self._drain.budget()
        if budget == 0:
            stop.wait(self._drain.wait_s())  # rate limit after an outage, on purpose
            return
        wait_ms = _GATED_POLL_MS if gated else self._poll_wait_ms()
        batch = poll(consumer, wait_ms, budget)
        self.ready.set()
        self._note_generation(consumer)
        self._sample(batch)
        self._release_holds()
        if self.lane is Lane.PRIORITY and batch:
            self._signal.set_busy(True)  # the normal lane pauses while this is handled
        if batch:
            self._drain.spend(sum(len(r) for r in batch.values()))
            self._handle(batch, consumer)
        if self.lane is Lane.PRIORITY:
            self._signal.set_busy(not self.breaker.is_open and backlog(consumer) > 0)

    def _note_generation(self, consumer: Any) -> None:
        # Every rebalance is logged, also one that moved none of this lane's partitions
        # (cooperative): the membership benchmark counts them from these lines.
        gen = generation(consumer)
        if gen is not None and gen != self._generation:
            log.info(
                "worker %s %s lane: group %s generation %s (was %s), %d partitions, leader %s",
                self.worker_id,
                self.lane.value,
                self._clients.group,
                gen,
                self._generation,
                len(self.assigned),
                leads(consumer),
            )
            self._generation = gen

    def _close(self) -> None:
        log.info("worker %s %s lane leaving the group", self.worker_id, self.lane.value)
        for closer in (*self._clients.closers(), self._processor.drop_connection):
            try:
                closer()
            except Exception:  # closing is best effort; the group times us out anyway
                log.exception("error while closing")

    def _sample(self, batch: Batch) -> None:
        if self._metrics is not None:
            size = sum(len(r) for r in batch.values())
            if size:
                self._metrics.observe_batch(size)
            if self.lane is not Lane.NORMAL:
                return
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
        consumer = self._clients.consumer
        for tp in self.holds.expired(now_ms()):
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
        # The origin group is the worker group's name for both lanes (tier records say
        # which deployment routed them, not which lane).
        return Source(coordinates(rec), rec.key, rec.value, self.settings.group_id)

    def _report(self, result: AttemptResult, rec: Any) -> None:
        if result.outcome.database_answered:
            self.breaker.record_success()
        if self._metrics is not None:
            observe(self._metrics, result, self.layout.tier_label(rec.topic))
        if not result.outcome.is_routine:
            seen = facts(result)
            log.info(
                "schedule=%s flag=%s attempt=%s outcome=%s error=%s topic=%s partition=%s "
                "offset=%s",
                seen.schedule_id,
                seen.flag_key,
                result.attempt,
                result.outcome.value,
                seen.error_class,
                rec.topic,
                rec.partition,
                rec.offset,
            )
        if self._on_result is not None:
            self._on_result(result, coordinates(rec))
