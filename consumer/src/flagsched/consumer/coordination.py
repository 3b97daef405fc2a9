"""The circuit breaker across the group: following, probing, announcing, pausing.

The worker's :class:`Breaker` (consumer/breaker.py) counts failures and times the
probes; this module acts on it. It follows the control channel (another worker
opened or closed the breaker), probes the database when a probe is due,
announces this worker's transitions, and pauses or resumes every partition of
both consumers. A database failure below the threshold pauses the partitions
for the infrastructure pause instead (each held until then).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kafka.errors import KafkaError

from flagsched.consumer.breaker import Breaker, DrainLimiter
from flagsched.consumer.holds import Holds
from flagsched.consumer.kafka_clients import KafkaClients
from flagsched.consumer.kafka_compat import resume
from flagsched.consumer.processor import now_ms
from flagsched.runtime.logtext import printable
from flagsched.runtime.settings import Settings
from flagsched.schemas.events import BreakerState

log = logging.getLogger(__name__)

BreakerHook = Callable[[BreakerState], None]


class BreakerCoordinator:
    """Pauses and resumes one worker's partitions as the shared breaker says."""

    def __init__(
        self,
        settings: Settings,
        breaker: Breaker,
        *,
        holds: Holds,
        assigned: set[Any],
        drain: DrainLimiter,
        clients: KafkaClients,
        probe: Callable[[], bool],
        on_breaker: BreakerHook | None = None,
    ) -> None:
        self.settings = settings
        self.breaker = breaker
        self._holds = holds
        self._assigned = assigned
        self._drain = drain
        self._clients = clients
        self._probe = probe
        self._on_breaker = on_breaker

    def follow_control(self) -> None:
        """Honour the OPEN and CLOSED events other workers published."""
        assert self._clients.control is not None
        for event in self._clients.control.poll():
            who, why = printable(event.worker_id), printable(event.reason)
            if event.state is BreakerState.OPEN and not self.breaker.is_open:
                if not self.breaker.open_remote():
                    log.debug("breaker open from %s ignored: the database answered us", who)
                    continue
                log.warning("breaker opened by %s: %s; pausing until a probe answers", who, why)
                self.pause_all()
            elif event.state is BreakerState.CLOSED and self.breaker.close_remote():
                log.warning("breaker closed by %s; resuming", who)
                self._resume_all()

    def probe_if_due(self) -> None:
        """Probe the database when the breaker says so; close and resume on success."""
        if not self.breaker.probe_due():
            return
        self._notify_breaker()
        ok = self._probe()
        self.breaker.probe_result(ok)
        if ok:
            self._announce(BreakerState.CLOSED, "probe succeeded")
            self._resume_all()

    def infra_pause(self, pause_s: float) -> None:
        """A database failure: open the breaker at the threshold, else pause for a while."""
        if self.breaker.record_failure():
            self.pause_all()
            reason = f"{self.settings.breaker_failure_threshold} database failures in a row"
            self._announce(BreakerState.OPEN, reason)
            return
        if self.breaker.is_open:
            self.pause_all()
            return
        until = now_ms() + int(pause_s * 1000)
        for consumer in self._clients.consumers():
            for tp in consumer.assignment():
                consumer.pause(tp)
                self._holds.hold(tp, max(until, self._holds.until(tp) or 0))

    def pause_all(self) -> None:
        """Pause every partition (breaker open); held records are re-judged on resume."""
        self._holds.forget(list(self._assigned))
        for consumer in self._clients.consumers():
            for tp in consumer.assignment():
                consumer.pause(tp)
        self._notify_breaker()

    def _announce(self, state: BreakerState, reason: str) -> None:
        # Best effort: other workers also find the outage themselves, or via a stale OPEN.
        assert self._clients.control is not None
        try:
            self._clients.control.publish(state, reason)
        except KafkaError as exc:
            log.warning("could not publish breaker %s: %s", state.value, exc)

    def _resume_all(self) -> None:
        for consumer in self._clients.consumers():
            resume(consumer, consumer.assignment())
        if self.breaker.closed_after_outage:
            self._drain.start()
        self._notify_breaker()

    def _notify_breaker(self) -> None:
        if self._on_breaker is not None:
            self._on_breaker(self.breaker.state)
