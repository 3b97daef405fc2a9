"""A lane's Kafka clients: connected within the startup deadline, closed best effort.

Each lane of a worker (consumer/lane_worker.py) has one consumer (the normal group
for the due and tier topics, or the priority lane's own group), one
transactional producer and the control channel.

Group membership (docs/architecture.md, "Group membership"): with a configured
worker id both consumers are static members (KIP-345) whose group instance id is
the worker id, so a worker restarted with the same id (a container restarted in
its pod, a StatefulSet pod) takes its partitions back without a rebalance. A
static member sends no LeaveGroup when it closes (kafka-python, as the Java
client before KIP-1092), so :meth:`KafkaClients.closers` leaves explicitly with
the instance id: a graceful stop hands its partitions over at once instead of
after the session timeout.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from typing import Any

from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import KafkaError

from flagsched.consumer.assignor import BalancedCooperativeAssignor
from flagsched.consumer.control import ControlChannel
from flagsched.consumer.kafka_compat import leave_and_close
from flagsched.consumer.txn import TransactionalForwarder
from flagsched.runtime.clients import make_consumer, make_producer
from flagsched.runtime.errors import ServiceUnavailable
from flagsched.runtime.settings import Settings
from flagsched.runtime.waiting import wait_for
from flagsched.schemas.topics import TopicLayout

#: ``cooperative-sticky`` moves only the partitions that change owner, balanced per topic;
#: ``range`` is eager (every member pauses on each rebalance).
_ASSIGNORS: dict[str, Any] = {
    "cooperative-sticky": BalancedCooperativeAssignor,
    "range": RangePartitionAssignor,
}
#: How long a closing consumer waits for the broker to confirm it left the group; past
#: it, the session timeout removes the member.
_LEAVE_TIMEOUT_MS = 2000
#: Builds the rebalance listener of a consumer (passed as a late-bound getter).
ListenerFactory = Callable[[Callable[[], Any]], Any]


class Lane(enum.Enum):
    """Which topics a lane consumes, in which group."""

    NORMAL = "normal"
    PRIORITY = "priority"


class KafkaClients:
    """The consumer, the transactional forwarder and the control channel of one lane."""

    def __init__(
        self,
        settings: Settings,
        layout: TopicLayout,
        worker_id: str,
        *,
        lane: Lane = Lane.NORMAL,
        static: bool = False,
    ) -> None:
        self.settings = settings
        self.layout = layout
        self.worker_id = worker_id
        self.lane = lane
        base = settings.group_id
        #: ``<group>`` for the normal lane, ``<group>.priority`` for the priority lane.
        self.group = base if lane is Lane.NORMAL else f"{base}.priority"
        self.topics = (
            [t for t in layout.consumed if t != layout.priority]
            if lane is Lane.NORMAL
            else [layout.priority]
        )
        #: The consumer's group instance id (the worker id: unique within each group),
        #: or None: a dynamic member.
        self.instance_id = worker_id if static else None
        self.consumer: Any = None
        self.forwarder: TransactionalForwarder | None = None
        self.control: ControlChannel | None = None

    def start(self, stop: threading.Event, listener: ListenerFactory) -> None:
        """Connect every client, waiting up to the startup timeout for each."""
        deadline = self.settings.startup_timeout_s
        kafka = "Kafka (FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS)"
        self.consumer = wait_for(
            lambda: make_consumer(
                self.settings,
                group_id=self.group,
                group_instance_id=self.instance_id,
                partition_assignment_strategy=(_ASSIGNORS[self.settings.partition_assignment],),
            ),
            what=kafka,
            deadline_s=deadline,
            stop=stop,
        )
        self.consumer.subscribe(self.topics, listener=listener(lambda: self.consumer))
        self.forwarder = wait_for(
            self._new_forwarder, what="Kafka transactions", deadline_s=deadline, stop=stop
        )
        self.control = wait_for(
            lambda: ControlChannel(self.settings, self.layout, self._control_id),
            what="the control topic",
            deadline_s=deadline,
            stop=stop,
        )

    @property
    def _control_id(self) -> str:
        # The lanes of one worker are separate breaker members: each must see the other's
        # OPEN event, and the channel skips events carrying its own id.
        return self.worker_id if self.lane is Lane.NORMAL else f"{self.worker_id}.priority"

    def _new_forwarder(self) -> TransactionalForwarder:
        # Stable per worker id and lane: a restarted worker fences its previous run.
        tid = f"{self.group}.{self.worker_id}"
        try:
            return TransactionalForwarder(
                lambda: make_producer(
                    self.settings,
                    transactional_id=tid,
                    transaction_timeout_ms=self.settings.transaction_timeout_ms,
                ),
                timeout_s=self.settings.transaction_timeout_ms / 1000,
            )
        except KafkaError as exc:
            raise ServiceUnavailable(f"cannot start transactional producer {tid}: {exc}") from exc

    def closers(self) -> tuple[Callable[[], object], ...]:
        """One closer per client, in closing order; each is called best effort."""
        reason = f"worker {self.worker_id} stopping"
        timeout_ms = _LEAVE_TIMEOUT_MS
        return (
            lambda: leave_and_close(self.consumer, reason, timeout_ms) if self.consumer else None,
            lambda: self.forwarder.close() if self.forwarder else None,
            lambda: self.control.close() if self.control else None,
        )

    def consumers(self) -> tuple[Any, ...]:
        """The consumers started so far (the lane's one, once started)."""
        return (self.consumer,) if self.consumer is not None else ()
