"""The priority lane: critical schedules have their own consumer (group
``<group>.priority``) so their records never queue behind the normal consumer's
fetch buffers, and while any priority partition this worker owns has records
waiting, the normal consumer's partitions are paused; they resume as soon as
the priority backlog is empty.

The backlog is read from the priority consumer's own fetch state (highwater
minus position): no broker round trip, so it runs on every loop turn. Priority
partitions are as many as the due topic's and assigned by range, so every
worker owning a due partition owns a priority partition too.
"""

from __future__ import annotations

import logging
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


class PriorityLane:
    """Pauses the normal consumer while the priority consumer has work."""

    def __init__(self) -> None:
        self._paused: set[Any] = set()

    def update(self, priority: Any, normal: Any, *, frozen: bool) -> bool:
        """Pause or resume normal partitions; True while priority work waits.

        ``frozen`` (breaker open) leaves everything as it is: the breaker owns pausing.
        """
        if frozen:
            self._paused.clear()
            return False
        assigned = set(normal.assignment())
        self._paused &= assigned
        if backlog(priority) > 0:
            normal_now = assigned - set(normal.paused())
            if normal_now:
                normal.pause(*normal_now)
                self._paused |= normal_now
            return True
        if self._paused:
            resume(normal, self._paused)
            self._paused.clear()
        return False
