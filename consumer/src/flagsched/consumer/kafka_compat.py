"""kafka-python 3.0 internals in one place: resuming a paused partition (working around a
stall), bounded transaction steps that never commit an aborted transaction's offsets,
leaving a group as a static member, consuming while a cooperative join is pending
(without throwing away a join that finished between two polls), and the group
generation and leadership.

kafka-python parks data it fetched for a partition that was paused meanwhile
(KAFKA-7548) and restores it when the partition is resumed — but only while its
"next records" slot is ``None``. An exhausted batch in that slot is falsy, not
``None``, so the parked data is never restored; and a partition with parked data
is never fetched again. A tier partition held for its due time (seek back, pause,
resume) then stops for good. Seen with kafka-python 3.0.12; the benchmark's
pre-dispatch burst and ``tests/integration/test_predispatch.py`` reproduce it.

flagsched always seeks a held partition back to the record it holds, so parked
data is never needed: :func:`resume` drops it and the partition is fetched again
from its position. This is the one place that touches the client's internals.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from kafka.coordinator.assignors.abstract import RebalanceProtocol
from kafka.errors import KafkaTimeoutError

log = logging.getLogger(__name__)

_PARKED = ("_paused_partition_records", "_paused_completed_fetches")


def resume(consumer: Any, partitions: Iterable[Any]) -> None:
    """Resume ``partitions`` and drop any data the client parked for them."""
    parts = list(partitions)
    if not parts:
        return
    consumer.resume(*parts)
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is None:
        return
    for attr in _PARKED:
        parked = getattr(fetcher, attr, None)
        if isinstance(parked, dict):
            for tp in parts:
                parked.pop(tp, None)
    current = getattr(fetcher, "_next_partition_records", None)
    if current is not None and not current:  # exhausted, but blocking the restore path
        fetcher._next_partition_records = None


def finish_transaction(
    producer: Any, futures: list[Any], offsets: dict[Any, Any], group_meta: Any, timeout_s: float
) -> None:
    """Flush, check every send, add the offsets and commit, each step bounded in time.

    kafka-python 3.0.12 waits without a timeout in ``send_offsets_to_transaction`` and
    ``commit_transaction``; after a broker restart a worker hung there for good (chaos
    runs), and once committed a transaction whose lifecycle record had failed. Here a
    failed send or a step that does not finish in ``timeout_s`` raises, and the caller
    aborts (or drops the producer, which the next ``init_transactions`` fences).
    """
    producer.flush(timeout=timeout_s)
    for fut in futures:
        if not fut.is_done or fut.exception is not None:
            raise fut.exception or KafkaTimeoutError("a send of the transaction did not finish")
    manager = producer._transaction_manager
    _forget_offsets_of_aborted_transactions(manager)
    _wait(
        producer,
        manager.send_offsets_to_transaction(offsets, group_meta),
        timeout_s,
        "adding the offsets to the transaction",
    )
    _wait(producer, manager.begin_commit(), timeout_s, "committing the transaction")


def abort_transaction(producer: Any, timeout_s: float) -> None:
    """Abort, bounded in time."""
    _wait(producer, producer._transaction_manager.begin_abort(), timeout_s, "aborting")


def _forget_offsets_of_aborted_transactions(manager: Any) -> None:
    """Drop the offsets an aborted transaction left for the next one to commit.

    kafka-python 3.0.12 keeps the offsets of ``send_offsets_to_transaction`` in
    ``TransactionManager._pending_txn_offset_commits`` and removes a partition's entry
    only when the broker accepted it. A TxnOffsetCommit refused as a whole (on
    ``IllegalGenerationError`` or ``UnknownMemberIdError`` after a rebalance: an
    abortable error) leaves every entry, the abort does not clear them, and the next
    transaction's TxnOffsetCommit sends them again beside its own. The next batch
    then commits the aborted batch's offsets, for partitions that were rewound (or
    are held, or were handed to another worker meanwhile): records never processed,
    or processed without their Kafka side effects, are skipped for good by whoever
    consumes the partition next. The chaos runs lost wake-ups and lifecycle events
    that way (docs/reliability.md, item 3). The Java client drops the pending offsets
    when a TxnOffsetCommit fails; here every transaction starts without any.
    ``tests/integration/test_kafka_basics.py`` shows both the client's behaviour and
    this one.
    """
    pending = getattr(manager, "_pending_txn_offset_commits", None)
    if isinstance(pending, dict):
        pending.clear()


def _wait(producer: Any, result: Any, timeout_s: float, what: str) -> None:
    producer._sender.wakeup()
    if not result.wait(timeout_ms=int(timeout_s * 1000)):
        raise KafkaTimeoutError(f"{what} did not finish within {timeout_s:.0f} s")


def leave_and_close(consumer: Any, reason: str, timeout_ms: int) -> None:
    """Close ``consumer``, leaving its group explicitly even as a static member.

    kafka-python sends LeaveGroup only for dynamic members (as the Java client did before
    KIP-1092): a static member that stops for good would hold its partitions until its
    session expires. LeaveGroup v3+ (Kafka 2.4+) names the member by its group instance
    id too, and the broker then removes the static member and rebalances at once. The
    client's own leave path builds exactly that request; here it is told the member is
    dynamic for this one call (an instance attribute shadowing
    ``BaseCoordinator.is_dynamic_member``). Without the attribute (another client
    version) this is a plain close, and the session timeout hands the partitions over.
    """
    coordinator: Any = getattr(consumer, "_coordinator", None)
    instance = getattr(coordinator, "group_instance_id", None)
    if instance and hasattr(coordinator, "is_dynamic_member"):
        # close() stops the heartbeat first, then takes the leave path.
        coordinator.is_dynamic_member = lambda: True
        log.info("leaving group %s as static member %s: %s", coordinator.group_id, instance, reason)
    consumer.close(autocommit=False, timeout_ms=timeout_ms)


def generation(consumer: Any) -> int | None:
    """The group generation ``consumer`` last joined (None before the first join or for an
    unknown client version). Every rebalance of the group increments it; a static member
    that rejoins with its instance id does not."""
    gen = getattr(getattr(consumer, "_coordinator", None), "_generation", None)
    value = getattr(gen, "generation_id", None)
    return value if isinstance(value, int) and value >= 0 else None


def leads(consumer: Any) -> bool | None:
    """Whether ``consumer`` computed the assignment of the generation it last joined, that
    is, led that join (None for an unknown client version).

    A static leader restarted with its instance id is the leader to the broker but not to
    itself: kafka-python joins with JoinGroup v7, and below v9 (KIP-814) the broker names
    the dead member's id as the leader, so the new process syncs as a follower and reads
    its stored assignment. No rebalance happens; this says False for it until the next
    rebalance, in which it does lead.
    """
    value = getattr(getattr(consumer, "_coordinator", None), "_is_leader", None)
    return value if isinstance(value, bool) else None


def poll(consumer: Any, timeout_ms: int, max_records: int | None) -> dict[Any, list[Any]]:
    """``consumer.poll``, but owned partitions keep flowing while a cooperative join waits,
    and a join that finished between two polls is completed, not sent again.

    kafka-python's ``poll()`` returns nothing at all while a JoinGroup is pending, also
    for the partitions the member keeps under the cooperative protocol. A join waits for
    every member, and for a crashed static member that is until its session expires:
    every worker stood still meanwhile (measured: 6-9 s when a crashed worker's
    replacement joined under a new id). KIP-429 lets a member go on consuming (and
    committing: the generation only changes when the join completes) what it owns, as
    the Java client does, so while the join is pending this drains the fetcher itself.
    A partition revoked by the join is handed over only after this member revoked it
    (cooperative round two); a commit that meets the new generation fails, and the batch
    is rewound and replayed like any failed commit.

    kafka-python 3.0.12 leaves a join (JoinGroup and SyncGroup) in flight when a poll's
    timeout ends first, and the next poll awaits it again; but if it finished in between
    (the loop was handling a batch), the next poll starts a new JoinGroup instead of
    taking its result (``ensure_active_group_async``: ``_join_task.is_done`` makes a new
    task). A follower's needless JoinGroup is answered from the group's state, but a
    *leader's* makes the broker rebalance the whole group: a restarted static leader, or
    the leader of a cooperative round, then caused a rebalance nobody needed
    (tests/integration/test_membership.py flaked on it). :func:`_claim_finished_join`
    hands the finished join to the next poll, which completes it as if it had waited.
    """
    _claim_finished_join(consumer)
    records: dict[Any, list[Any]] = consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
    if records or not _joining_cooperatively(consumer) or not consumer.assignment():
        return records
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is None:
        return records
    limit = max_records or consumer.config["max_poll_records"]
    fetched, _ = fetcher.fetch_records(limit, update_offsets=True, timeout_ms=0)
    return dict(fetched)


class _FinishedJoin:
    """A join task that finished after the poll awaiting it gave up. It reads as still
    running, so the coordinator's next poll awaits it instead of replacing it; awaiting
    it yields the finished task's assignment (or raises its error) at once."""

    is_done = False  # what the coordinator checks before it starts a new join

    def __init__(self, finished: Any) -> None:
        self._finished = finished

    def add_callback(self, f: Any, *args: Any, **kwargs: Any) -> _FinishedJoin:
        self._finished.add_callback(f, *args, **kwargs)
        return self

    def add_errback(self, f: Any, *args: Any, **kwargs: Any) -> _FinishedJoin:
        self._finished.add_errback(f, *args, **kwargs)
        return self

    def __await__(self) -> Any:
        return self._finished.__await__()


def _claim_finished_join(consumer: Any) -> None:
    # Only the coordinator's join loop, inside poll() on this lane's thread, sets the
    # task; between two polls of this thread nothing else touches it.
    coordinator: Any = getattr(consumer, "_coordinator", None)
    task = getattr(coordinator, "_join_task", None)
    if task is not None and not isinstance(task, _FinishedJoin) and task.is_done is True:
        coordinator._join_task = _FinishedJoin(task)
        log.info("group %s: a join finished between two polls; completing it", coordinator.group_id)


def _joining_cooperatively(consumer: Any) -> bool:
    coordinator = getattr(consumer, "_coordinator", None)
    protocol = getattr(coordinator, "_rebalance_protocol", None)
    return (
        protocol is RebalanceProtocol.COOPERATIVE
        and getattr(coordinator, "_join_task", None) is not None
    )
