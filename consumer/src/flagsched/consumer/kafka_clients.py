"""The worker's Kafka clients: connected within the startup deadline, closed best effort.

Two consumers (the normal group for the due and tier topics, and the priority
lane's own group), one transactional producer and the control channel.

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

import threading
from collections.abc import Callable
from typing import Any

from kafka.errors import KafkaError

from flagsched.consumer.control import ControlChannel
from flagsched.consumer.kafka_compat import leave_and_close
from flagsched.consumer.txn import TransactionalForwarder
from flagsched.runtime.clients import make_consumer, make_producer
from flagsched.runtime.errors import ServiceUnavailable
from flagsched.runtime.settings import Settings
from flagsched.runtime.waiting import wait_for
from flagsched.schemas.topics import TopicLayout

#: How long a closing consumer waits for the broker to confirm it left the group; past
#: it, the session timeout removes the member.
_LEAVE_TIMEOUT_MS = 2000
#: Builds the rebalance listener of a consumer (passed as a late-bound getter).
ListenerFactory = Callable[[Callable[[], Any]], Any]


class KafkaClients:
    """The consumers, the transactional forwarder and the control channel of one worker."""

    def __init__(
        self, settings: Settings, layout: TopicLayout, worker_id: str, *, static: bool = False
    ) -> None:
        self.settings = settings
        self.layout = layout
        self.worker_id = worker_id
        #: The group instance id of both consumers (one per group), or None: dynamic.
        self.instance_id = worker_id if static else None
        self.consumer: Any = None
        self.priority: Any = None
        self.forwarder: TransactionalForwarder | None = None
        self.control: ControlChannel | None = None

    def start(self, stop: threading.Event, listener: ListenerFactory) -> None:
        """Connect every client, waiting up to the startup timeout for each."""
        deadline, group = self.settings.startup_timeout_s, self.settings.group_id
        kafka = "Kafka (FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS)"
        self.consumer = wait_for(
            lambda: make_consumer(
                self.settings, group_id=group, group_instance_id=self.instance_id
            ),
            what=kafka,
            deadline_s=deadline,
            stop=stop,
        )
        self.consumer.subscribe(
            [t for t in self.layout.consumed if t != self.layout.priority],
            listener=listener(lambda: self.consumer),
        )
        self.priority = wait_for(
            lambda: make_consumer(
                self.settings, group_id=f"{group}.priority", group_instance_id=self.instance_id
            ),
            what=kafka,
            deadline_s=deadline,
            stop=stop,
        )
        self.priority.subscribe([self.layout.priority], listener=listener(lambda: self.priority))
        self.forwarder = wait_for(
            self._new_forwarder, what="Kafka transactions", deadline_s=deadline, stop=stop
        )
        self.control = wait_for(
            lambda: ControlChannel(self.settings, self.layout, self.worker_id),
            what="the control topic",
            deadline_s=deadline,
            stop=stop,
        )

    def _new_forwarder(self) -> TransactionalForwarder:
        tid = f"{self.settings.group_id}.{self.worker_id}"
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
            lambda: leave_and_close(self.priority, reason, timeout_ms) if self.priority else None,
            lambda: self.forwarder.close() if self.forwarder else None,
            lambda: self.control.close() if self.control else None,
        )

    def consumers(self) -> tuple[Any, ...]:
        """The consumers started so far."""
        return tuple(c for c in (self.consumer, self.priority) if c is not None)

    def owner(self, tp: Any) -> Any:
        """The consumer a partition belongs to."""
        return self.priority if tp.topic == self.layout.priority else self.consumer
