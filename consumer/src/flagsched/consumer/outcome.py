"""Outcome -> action, decided in one place.

:func:`decide` turns a record's result (consumer/results.py) into an :class:`Action`:
which records to publish in the Kafka transaction (tier, dead letter, lifecycle),
whether the source offset is committed, or whether the partition is held (paused and
sought back).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import assert_never

from flagsched.consumer.decode import Coordinates
from flagsched.consumer.results import (
    LIFECYCLE_TYPE,
    Applied,
    AttemptResult,
    Cancelled,
    DeadLettered,
    Deferred,
    Dropped,
    Held,
    Hopped,
    Paused,
    Poison,
    Recorded,
    RetryScheduled,
    Superseded,
    brought,
)
from flagsched.schemas.events import LifecycleEvent, to_epoch_ms
from flagsched.schemas.headers import TRACEPARENT, RecordHeaders
from flagsched.schemas.topics import TopicLayout


@dataclass(frozen=True)
class OutRecord:
    """A record to publish inside the worker's Kafka transaction."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(frozen=True)
class Action:
    """What the worker does with the source record."""

    publish: tuple[OutRecord, ...] = ()
    commit: bool = True
    hold_until_ms: int | None = None
    pause_partitions_s: float | None = None


@dataclass(frozen=True)
class Source:
    """The source record as the decision needs it."""

    coords: Coordinates
    key: bytes | None
    value: bytes | None
    group_id: str


Clock = Callable[[], float]


def decide(
    result: AttemptResult,
    source: Source,
    layout: TopicLayout,
    *,
    infra_pause_s: float,
    clock: Clock = time.time,
) -> Action:
    """The single mapping from an outcome to the worker's action."""
    action = _action(result, source, layout, infra_pause_s=infra_pause_s, clock=clock)
    also = brought(result)
    if not also:
        return action
    # The schedules this record brought take effect before it: their events come first.
    return Action(
        publish=(*(_lifecycle(r, layout) for r in also), *action.publish),
        commit=action.commit,
        hold_until_ms=action.hold_until_ms,
        pause_partitions_s=action.pause_partitions_s,
    )


def _action(
    result: AttemptResult,
    source: Source,
    layout: TopicLayout,
    *,
    infra_pause_s: float,
    clock: Clock,
) -> Action:
    match result:
        case Held():
            return Action(commit=False, hold_until_ms=result.until_ms)
        case Paused():
            return Action(commit=False, pause_partitions_s=infra_pause_s)
        case Dropped():
            return Action()
        case Hopped():
            # Same attempt, same due time, same failure history: only the tier changes.
            return Action(publish=(_forward(result.topic, source, result.carried),))
        case Deferred():
            # Round the smallest tier, tried again a tier from now (consumer/holds.py):
            # the same attempt, due time and failure history.
            tier_s = min(layout.tiers_s)
            wait = {"not_before_ms": int((clock() + tier_s) * 1000)}
            headers = result.carried.model_copy(update=wait)
            return Action(publish=(_forward(layout.tier_topic(tier_s), source, headers),))
        case RetryScheduled():
            due_ms = to_epoch_ms(result.next_attempt_at)
            remaining_s = max(0.0, due_ms / 1000 - clock())
            topic = layout.tier_for_delay(remaining_s) or layout.tier_topic(layout.tiers_s[0])
            headers = _failure_headers(result, source, attempt=result.attempt + 1, due_ms=due_ms)
            return Action(publish=(_forward(topic, source, headers), _lifecycle(result, layout)))
        case DeadLettered():
            headers = _failure_headers(
                result, source, attempt=result.attempt, due_ms=result.due_ms or 0
            )
            return Action(
                publish=(_forward(layout.dead_letter, source, headers), _lifecycle(result, layout))
            )
        case Poison():
            headers = _failure_headers(
                result, source, attempt=result.attempt, due_ms=result.due_ms or 0
            )
            return Action(publish=(_forward(layout.dead_letter, source, headers),))
        case Applied() | Superseded() | Cancelled():
            # Tell subscribers, commit.
            return Action(publish=(_lifecycle(result, layout),))
        case _:
            assert_never(result)


def _forward(topic: str, source: Source, headers: RecordHeaders) -> OutRecord:
    # The original key and value travel unchanged; only the header set is rebuilt.
    return OutRecord(topic, source.key, source.value, headers.encode())


def _failure_headers(
    result: RetryScheduled | DeadLettered | Poison,
    source: Source,
    *,
    attempt: int,
    due_ms: int,
) -> RecordHeaders:
    match result:
        case RetryScheduled():
            first_failure, reason = result.first_failure_at, None
        case DeadLettered():
            first_failure, reason = result.first_failure_at, result.reason
        case Poison():
            first_failure, reason = None, result.reason
        case _:
            assert_never(result)
    return RecordHeaders(
        attempt=attempt,
        due_ms=due_ms,
        first_failure_ms=None if first_failure is None else to_epoch_ms(first_failure),
        origin_topic=source.coords.topic,
        origin_partition=source.coords.partition,
        origin_offset=source.coords.offset,
        origin_group=source.group_id,
        error_class=result.error_class,
        error_message=result.error_message,
        dlt_reason=reason,
        traceparent=result.traceparent,
    )


def _lifecycle(result: Recorded, layout: TopicLayout) -> OutRecord:
    next_at: datetime | None = None
    error_class: str | None = None
    error_message: str | None = None
    reason: str | None = None
    by: int | None = None
    version: int | None = None
    match result:
        case Applied():
            version = result.flag_version
        case RetryScheduled():
            next_at = result.next_attempt_at
            error_class, error_message = result.error_class, result.error_message
        case DeadLettered():
            error_class, error_message = result.error_class, result.error_message
            reason = result.reason.value
        case Superseded():
            by = result.superseded_by
        case Cancelled():
            pass
        case _:
            assert_never(result)
    event = LifecycleEvent(
        type=LIFECYCLE_TYPE[result.outcome],
        schedule_id=result.schedule_id,
        flag_key=result.flag_key,
        attempt=result.attempt,
        occurred_at=datetime.now(UTC),
        scheduled_at=result.scheduled_at,
        priority=result.priority,
        next_attempt_at=next_at,
        error_class=error_class,
        error_message=error_message,
        reason=reason,
        superseded_by=by,
        flag_version=version,
        replay=result.replay,
    )
    # Subscribers can continue the schedule's trace from the attempt that produced it.
    headers = [(TRACEPARENT, result.traceparent.encode())] if result.traceparent else []
    return OutRecord(
        layout.lifecycle, result.flag_key.encode(), event.model_dump_json().encode(), headers
    )
