"""Prometheus metrics of a worker or dispatcher; see docs/observability.md for the list.

One :class:`Metrics` owns its own ``CollectorRegistry`` (tests create many; nothing
touches the global registry). What a worker's attempt results count for is decided in
the consumer (``flagsched.consumer.observe``), which knows what each outcome means;
this module only holds the instruments.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from flagsched.runtime.telemetry.server import MetricsServer, serve_registry
from flagsched.schemas.error_classes import ErrorClass
from flagsched.schemas.headers import DeadLetterReason

log = logging.getLogger(__name__)

#: Lateness from milliseconds (a hold released on time) to 15 minutes (an outage).
LATENESS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)
ATTEMPT_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20)
#: ``flagsched_breaker_state`` values.
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class Metrics:
    """Every flagsched metric, registered on :attr:`registry`.

    Thread-safe (prometheus_client metrics are); :meth:`observe` never raises into the
    caller. Bounded label values are pre-created at zero so ``increase()`` sees the
    first event.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(f"flagsched_{name}", doc, labels, registry=r)

        def histogram(name: str, doc: str, buckets: Sequence[float], *labels: str) -> Histogram:
            return Histogram(f"flagsched_{name}", doc, labels, registry=r, buckets=buckets)

        self.records = counter("records", "Records handled, by outcome and tier", "outcome", "tier")
        self.attempts = counter(
            "attempts",
            "Attempts (the database was tried), by outcome, error class, tier and kind "
            "(first attempt or retry)",
            *("outcome", "error_class", "tier", "attempt_kind"),
        )
        self.applied = counter("schedules_applied", "Schedules applied")
        self.superseded = counter("schedules_superseded", "Schedules superseded by a newer one")
        self.cancelled = counter("schedules_cancelled", "Schedules found cancelled")
        self.retries = counter(
            "retries_scheduled", "Retries scheduled, by error class", "error_class"
        )
        self.dead_letters = counter("dead_letters", "Records dead-lettered, by reason", "reason")
        self.replays = counter("replays", "Redelivered attempts re-sending side effects", "outcome")
        self.attempts_per_applied = histogram(
            "attempts_per_applied_schedule", "The attempt that applied a schedule", ATTEMPT_BUCKETS
        )
        self.apply_lateness = histogram(
            "apply_lateness_seconds", "Applying attempt's start minus its due time", LATENESS_S
        )
        self.first_lateness = histogram(
            "first_attempt_lateness_seconds",
            "Attempt 1's start minus the schedule's time",
            LATENESS_S,
        )
        self.retry_lateness = histogram(
            "retry_lateness_seconds", "Retry's start minus its planned time", LATENESS_S, "tier"
        )
        self.batch = histogram("batch_records", "Records per non-empty poll", BATCH_BUCKETS)
        self.lag = Gauge(
            "flagsched_consumer_lag_records",
            "End offset minus position, per assigned partition",
            ["topic", "partition"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "flagsched_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open", registry=r
        )
        self.breaker_transitions = counter("breaker_transitions", "Breaker state changes", "to")
        self.dispatched = counter("schedules_dispatched", "Schedules published as due")
        self.rewakes = counter("stuck_rewakes", "Wake-ups re-sent for schedules stuck past due")
        self._breaker = "closed"
        self._lag_owned: set[Any] = set()
        for reason in DeadLetterReason:
            self.dead_letters.labels(reason.value)
        for cls in ErrorClass:
            self.retries.labels(cls.value)
        for state in BREAKER_STATES:
            self.breaker_transitions.labels(state)

    # --- worker ----------------------------------------------------------------------
    def observe_batch(self, size: int) -> None:
        """One poll returned ``size`` records (call for non-empty polls)."""
        self.batch.observe(size)

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        """Records behind on one partition (negative values are clamped to 0)."""
        self.lag.labels(topic, str(partition)).set(max(0, lag))

    def update_lag(self, end_offsets: Mapping[Any, int], positions: Mapping[Any, int]) -> None:
        """Set lag for each partition in ``positions`` from kafka-python ``TopicPartition``
        keyed maps (``consumer.end_offsets(tps)`` and ``consumer.position(tp)``)."""
        for tp, position in positions.items():
            end = end_offsets.get(tp)
            if end is not None and position is not None:
                self.set_lag(tp.topic, tp.partition, end - position)

    def sample_consumer_lag(self, consumer: Any) -> bool:
        """Lag of every partition a kafka-python consumer owns, from its own fetch state
        (highwater minus position; no broker round trip), so it can run after each poll.
        Series of partitions no longer assigned are dropped. Never raises. Returns
        whether every owned partition had a lag to report (not yet, before its first
        fetch): the caller samples again soon if not."""
        try:
            owned = set(consumer.assignment() or ())
            complete = True
            for tp in owned:
                high, position = consumer.highwater(tp), consumer.position(tp, timeout_ms=0)
                if high is not None and position is not None:
                    self.set_lag(tp.topic, tp.partition, high - position)
                else:
                    complete = False
            self.forget_partitions(self._lag_owned - owned)
            self._lag_owned = owned
        except Exception:  # a rebalance in between, a closed consumer: skip this sample
            log.debug("consumer lag not sampled", exc_info=True)
            return False
        return complete

    def forget_partitions(self, partitions: Iterable[Any]) -> None:
        """Drop the lag series of revoked partitions (objects with topic/partition)."""
        for tp in partitions:
            self.lag.remove(tp.topic, str(tp.partition))

    def set_breaker(self, state: str) -> None:
        """The breaker's state: ``closed``, ``half_open`` (or ``half-open``) or ``open``;
        a :class:`flagsched.schemas.events.BreakerState` works too."""
        name = str(state).lower().replace("-", "_")
        if name not in BREAKER_STATES:
            raise ValueError(f"unknown breaker state {state!r}; expected {list(BREAKER_STATES)}")
        self.breaker_state.set(BREAKER_STATES[name])
        if name != self._breaker:
            self._breaker = name
            self.breaker_transitions.labels(name).inc()

    # --- dispatcher ------------------------------------------------------------------
    def observe_dispatched(self, count: int) -> None:
        """The dispatcher published ``count`` due schedules (``dispatch_once()``'s result)."""
        if count > 0:
            self.dispatched.inc(count)

    def observe_rewakes(self, count: int) -> None:
        """The dispatcher re-sent ``count`` stuck wake-ups (``sweep_stuck()``'s result)."""
        if count > 0:
            self.rewakes.inc(count)

    # --- exposition ------------------------------------------------------------------
    def serve(self, port: int = 0, addr: str = "127.0.0.1") -> MetricsServer:
        """Start the ``/metrics`` endpoint; the result's ``port`` is the bound port and
        calling it (or ``.stop()``) shuts the endpoint down."""
        return serve_registry(self.registry, port, addr)
