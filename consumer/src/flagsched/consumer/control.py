"""The compacted control topic: how workers share the circuit breaker's state.

Kafka is the coordination medium (no Redis): the worker that opens its breaker
publishes an OPEN event keyed ``breaker``; every worker reads the topic without
a group (assigned, from the beginning, so the latest state is known at start)
and honours it on its next loop turn, well within a second.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from kafka import TopicPartition
from pydantic import ValidationError

from flagsched.runtime.clients import make_consumer, make_producer
from flagsched.runtime.logtext import printable
from flagsched.runtime.settings import Settings
from flagsched.schemas.events import (
    CONTROL_MAX_BYTES,
    CONTROL_REASON_MAX_CHARS,
    WORKER_ID_MAX_CHARS,
    BreakerState,
    ControlEvent,
)
from flagsched.schemas.topics import TopicLayout

log = logging.getLogger(__name__)

BREAKER_KEY = b"breaker"


class ControlChannel:
    """Publish and read breaker events on the control topic."""

    def __init__(self, settings: Settings, layout: TopicLayout, worker_id: str) -> None:
        # As the event carries it (bounded): how this worker knows its own events.
        self.worker_id = worker_id[:WORKER_ID_MAX_CHARS]
        self._topic = layout.control
        self._stale = timedelta(seconds=settings.breaker_stale_s)
        self._producer: Any = make_producer(settings, linger_ms=0)
        self._consumer: Any = make_consumer(settings, group_id=None)
        self._consumer.assign([TopicPartition(self._topic, 0)])
        self._consumer.seek_to_beginning()

    def publish(self, state: BreakerState, reason: str) -> None:
        """Tell every worker; waits for the broker's acknowledgement."""
        event = ControlEvent(
            state=state,
            worker_id=self.worker_id,
            reason=reason[:CONTROL_REASON_MAX_CHARS],
            at=datetime.now(UTC),
        )
        self._producer.send(
            self._topic, key=BREAKER_KEY, value=event.model_dump_json().encode()
        ).get(timeout=10)
        log.warning(
            "breaker %s published by %s: %s", state.value, self.worker_id, printable(reason)
        )

    def poll(self) -> list[ControlEvent]:
        """Events from other workers since the last call (never blocks for long)."""
        events = []
        for records in self._consumer.poll(timeout_ms=0).values():
            for rec in records:
                if rec.value is not None and len(rec.value) > CONTROL_MAX_BYTES:
                    log.warning(
                        "ignoring control record at offset %s: %d bytes, over %d",
                        rec.offset,
                        len(rec.value),
                        CONTROL_MAX_BYTES,
                    )
                    continue
                try:
                    event = ControlEvent.model_validate_json(rec.value)
                except (ValidationError, TypeError, ValueError):
                    log.warning("ignoring malformed control record at offset %s", rec.offset)
                    continue
                if event.worker_id == self.worker_id:
                    continue
                if event.state is BreakerState.OPEN and self._too_old(event):
                    continue  # an OPEN left behind by a worker that died long ago
                events.append(event)
        return events

    def _too_old(self, event: ControlEvent) -> bool:
        return datetime.now(UTC) - event.at > self._stale

    def close(self) -> None:
        """Release the clients."""
        self._consumer.close(autocommit=False)
        self._producer.close(timeout=5)
