"""The priority lane: critical schedules have their own consumer (group
``<group>.priority``), polled by a thread of its own (consumer/lane_worker.py), so
their records never queue behind the normal consumer's fetch buffers or batches,
and the priority group joins and rebalances whatever the normal loop is doing.
While the priority lane has records in hand or waiting on a partition it owns,
the normal lane's partitions are paused; they resume as soon as the priority
backlog is empty.

The backlog is read from the priority consumer's own fetch state (highwater
minus position), by the priority lane's thread, and published to the normal lane
through :class:`PrioritySignal`: the two consumers are never touched from each
other's thread.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from flagsched.consumer.kafka_compat import resume

log = logging.getLogger(__name__)


def backlog(consumer: Any) -> int:
    """Records waiting on the unpaused partitions ``consumer`` owns."""
    waiting = 0
    paused = set(consumer.paused())
    for tp in consumer.assignment():
        if tp in paused:
            continue
        high = consumer.highwater(tp)
        position = consumer.position(tp, timeout_ms=0)
        if high is not None and position is not None:
            waiting += max(0, high - position)
    return waiting


class PrioritySignal:
    """Whether the priority lane has work: set by its thread, read by the normal lane's."""

    def __init__(self) -> None:
        self._busy = threading.Event()

    def set_busy(self, busy: bool) -> None:
        """Called by the priority lane after each poll and batch."""
        if busy:
            self._busy.set()
        else:
            self._busy.clear()

    @property
    def busy(self) -> bool:
        """True while priority work waits or is in hand."""
        return self._busy.is_set()


class PriorityGate:
    """The normal lane's side: pauses its partitions while the priority lane is busy."""

    def __init__(self, signal: PrioritySignal) -> None:
        self._signal = signal
        self._paused: set[Any] = set()

    def update(self, normal: Any, *, frozen: bool) -> bool:
        """Pause or resume normal partitions; True while priority work waits.

        ``frozen`` (breaker open) leaves everything as it is: the breaker owns pausing.
        """
        if frozen:
            self._paused.clear()
            return False
        assigned = set(normal.assignment())
        self._paused &= assigned
        if self._signal.busy:
            normal_now = assigned - set(normal.paused())
            if normal_now:
                normal.pause(*normal_now)
                self._paused |= normal_now
            return True
        if self._paused:
            resume(normal, self._paused)
            self._paused.clear()
        return False
