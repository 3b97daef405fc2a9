"""A lane's rebalance listener: holds of partitions that move are re-derived.

Registered on each lane's consumer (consumer/lane_worker.py); it keeps the lane's
set of assigned partitions and leaves a newly assigned partition paused while the
circuit breaker is open. With the cooperative protocol (the default) kafka-python
passes only the partitions that actually move: a partition kept across a
rebalance keeps its position, its pause and its hold, which stay true.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from kafka import ConsumerRebalanceListener

from flagsched.consumer.breaker import Breaker
from flagsched.consumer.holds import Holds
from flagsched.consumer.kafka_compat import resume

log = logging.getLogger(__name__)


class RebalanceOwner(Protocol):
    """What the listener keeps up to date on the worker."""

    holds: Holds
    assigned: set[Any]
    lag_sampled: float
    breaker: Breaker

    def pause_all(self) -> None:
        """Pause every partition (breaker open)."""


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Holds of (newly) assigned partitions are re-derived, never carried over.

    With eager (range) assignment kafka-python passes every partition, also those that
    stay, and keeps their paused flag: so every partition passed here is resumed, and a
    held record is fetched again from its (sought-back) position and judged again from
    its headers.
    """

    def __init__(self, worker: RebalanceOwner, consumer: Callable[[], Any]) -> None:
        self._w = worker
        self._consumer = consumer

    def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
        revoked = list(revoked)
        self._w.holds.forget(revoked)
        self._w.assigned.difference_update(revoked)

    def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
        assigned = list(assigned)
        self._w.holds.forget(assigned)
        self._w.assigned.update(assigned)
        self._w.lag_sampled = float("-inf")  # sample the new partitions' lag at once
        if self._w.breaker.is_open:
            self._w.pause_all()
        elif assigned:
            resume(self._consumer(), assigned)
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))
