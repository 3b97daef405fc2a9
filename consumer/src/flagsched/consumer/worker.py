"""The worker: two lanes (priority and normal), each a consumer with a thread of its own.

The normal lane (due and tier topics, group ``<group>``) runs in the caller's
thread, the priority lane (the priority topic, group ``<group>.priority``) in a
second one; consumer/lane_worker.py is the loop of each, consumer/lanes.py how
the normal lane yields to priority work. A lane has its own database connection
and transactional producer, so neither waits on the other's batch, and each
consumer joins, heartbeats and rebalances on its own.

Group membership (docs/architecture.md, "Group membership"): a worker with a
configured id (``FLAGSCHED_WORKER_ID``, the pod name in Kubernetes) joins both
groups as a static member with that id, so a restart with the same id takes its
partitions back without a rebalance; a graceful stop leaves both groups at once
(consumer/kafka_clients.py).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from typing import Any

from flagsched.consumer.breaker import Breaker
from flagsched.consumer.coordination import BreakerHook
from flagsched.consumer.kafka_clients import Lane
from flagsched.consumer.lane_worker import LaneWorker, ResultHook
from flagsched.consumer.lanes import PrioritySignal
from flagsched.runtime.settings import Settings
from flagsched.runtime.telemetry.metrics import Metrics
from flagsched.runtime.telemetry.tracing import Tracing
from flagsched.schemas.topics import TopicLayout

log = logging.getLogger(__name__)

# How long a stopping worker waits for the priority lane to finish its batch and leave;
# it is bounded by the same timeouts as the normal lane's close.
_JOIN_S = 60.0


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
        signal = PrioritySignal()
        self.normal, self.priority = (
            LaneWorker(
                settings,
                layout,
                lane,
                signal,
                worker_id=self.worker_id,
                static=self.static,
                on_result=on_result,
                on_breaker=on_breaker,
                metrics=metrics,
                tracing=tracing,
            )
            for lane in (Lane.NORMAL, Lane.PRIORITY)
        )
        #: Set once both lanes have polled for the first time.
        self.ready = _BothReady(self.normal.ready, self.priority.ready)

    @property
    def lanes(self) -> tuple[LaneWorker, LaneWorker]:
        """The normal and the priority lane."""
        return self.normal, self.priority

    @property
    def assigned(self) -> set[Any]:
        """Partitions this worker owns now, in both groups."""
        return self.normal.assigned | self.priority.assigned

    @property
    def breaker(self) -> Breaker:
        """The normal lane's breaker (the priority lane's follows it through the group)."""
        return self.normal.breaker

    def generations(self) -> dict[str, int | None]:
        """Per group this worker is a member of: the generation it last joined."""
        return dict(lane.generation() for lane in self.lanes)

    def leads(self) -> dict[str, bool | None]:
        """Per group this worker is a member of: whether it computed the current assignment."""
        return dict(lane.leads() for lane in self.lanes)

    def run(self, stop: threading.Event) -> None:
        """Run both lanes until ``stop`` is set; each finishes its batch and leaves."""
        log.info(
            "worker %s starting as a %s member",
            self.worker_id,
            "static" if self.static else "dynamic",
        )
        failed: list[BaseException] = []

        def priority_lane() -> None:
            try:
                self.priority.run(stop)
            except BaseException as exc:  # the worker stops: a supervisor restarts it
                log.exception("worker %s: the priority lane failed; stopping", self.worker_id)
                failed.append(exc)
                stop.set()

        thread = threading.Thread(
            target=priority_lane, name=f"{self.worker_id}-priority", daemon=True
        )
        thread.start()
        try:
            self.normal.run(stop)
        finally:
            stop.set()
            thread.join(timeout=_JOIN_S)
        if failed:
            raise failed[0]


class _BothReady:
    """Reads like a ``threading.Event`` that is set once both lanes' events are."""

    def __init__(self, *events: threading.Event) -> None:
        self._events = events

    def is_set(self) -> bool:
        return all(e.is_set() for e in self._events)
