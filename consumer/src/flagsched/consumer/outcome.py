"""Outcome -> action, decided in one place.

Every record a worker touches ends in exactly one :class:`Outcome`;
:func:`decide` turns it into an :class:`Action`: which records to publish in the
Kafka transaction (tier, dead letter, lifecycle), whether the source offset is
committed, or whether the partition is held (paused and sought back).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from flagsched.consumer.decode import Coordinates
from flagsched.schemas.events import LifecycleEvent, LifecycleType, to_epoch_ms
from flagsched.schemas.headers import TRACEPARENT, DeadLetterReason, RecordHeaders
from flagsched.schemas.topics import TopicLayout


class Outcome(StrEnum):
    """How one record ended."""

    APPLIED = "applied"
    RETRY = "retry"
    DEAD = "dead"
    SUPERSEDED = "superseded"
    CANCELLED = "cancelled"
    DROP = "drop"  # stale or duplicate: nothing to do but commit
    POISON = "poison"  # undecodable: dead letter without a schedule
    HOLD = "hold"  # not due yet: pause the partition until hold_until_ms
    HOP = "hop"  # in a tier with time left: move to a smaller tier
    PAUSE = "pause"  # infrastructure failure: no attempt consumed, retry in place

    # What each outcome means, in one place (metrics, logs, the breaker and bookkeeping
    # ask these instead of keeping sets of their own).
    @property
    def is_attempt(self) -> bool:
        """The worker tried the record (``flagsched_attempts_total``): the database was
        asked, or it failed (pause), or the record was judged poison. Holds, hops and
        drops are not attempts. Only a pause uses up no attempt number."""
        return self not in _NOT_ATTEMPTS

    @property
    def database_answered(self) -> bool:
        """The outcome needed a working database (it resets the breaker's failure count)."""
        return self not in _NO_DATABASE

    @property
    def is_terminal(self) -> bool:
        """The schedule is finished: no further attempt will be made."""
        return self in _TERMINAL

    @property
    def has_lifecycle_event(self) -> bool:
        """Subscribers hear of it on the lifecycle topic (and a replay re-sends it)."""
        return self in _LIFECYCLE_TYPE

    @property
    def is_failure(self) -> bool:
        """The attempt failed (its span's status is ERROR): retry, dead, poison, pause."""
        return self in _FAILURES

    @property
    def is_routine(self) -> bool:
        """Nothing an operator needs to read in the log (held, dropped, hopped, applied)."""
        return self in _ROUTINE


_NOT_ATTEMPTS = frozenset({Outcome.HOLD, Outcome.HOP, Outcome.DROP})
_NO_DATABASE = frozenset({Outcome.HOLD, Outcome.HOP, Outcome.POISON, Outcome.PAUSE})
_TERMINAL = frozenset({Outcome.APPLIED, Outcome.DEAD, Outcome.SUPERSEDED, Outcome.CANCELLED})
_FAILURES = frozenset({Outcome.RETRY, Outcome.DEAD, Outcome.POISON, Outcome.PAUSE})
_ROUTINE = frozenset({Outcome.HOLD, Outcome.DROP, Outcome.APPLIED, Outcome.HOP})


@dataclass(frozen=True)
class AttemptResult:
    """What happened to one record; built by consumer/apply.py or the worker."""

    outcome: Outcome
    attempt: int
    schedule_id: int | None = None
    flag_key: str | None = None
    scheduled_at: datetime | None = None
    error_class: str | None = None
    error_message: str | None = None
    dlt_reason: DeadLetterReason | None = None
    next_attempt_at: datetime | None = None
    first_failure_at: datetime | None = None
    flag_version: int | None = None
    superseded_by: int | None = None
    hold_until_ms: int | None = None
    hop_topic: str | None = None
    due_ms: int | None = None
    traceparent: str | None = None
    carried: RecordHeaders | None = None
    replay: bool = False  # side effects of an attempt already recorded, sent again
    lateness_ms: float | None = None  # start of the attempt minus its due time
    #: Older schedules of the flag this record's attempt applied first, in due order
    #: (consumer/dueorder.py); their lifecycle events go out with this record's.
    also_applied: tuple[AttemptResult, ...] = ()


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
    if not result.also_applied:
        return action
    # The schedules this record brought take effect before it: their events come first.
    brought = tuple(_lifecycle(r, layout) for r in result.also_applied)
    return Action(
        publish=(*brought, *action.publish),
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
    o = result.outcome
    if o is Outcome.HOLD:
        return Action(commit=False, hold_until_ms=result.hold_until_ms)
    if o is Outcome.PAUSE:
        return Action(commit=False, pause_partitions_s=infra_pause_s)
    if o is Outcome.DROP:
        return Action()
    if o is Outcome.HOP:
        # Same attempt, same due time, same failure history: only the tier changes.
        assert result.hop_topic is not None
        assert result.carried is not None
        return Action(publish=(_forward(result.hop_topic, source, result.carried),))
    if o is Outcome.RETRY:
        assert result.next_attempt_at is not None
        due_ms = to_epoch_ms(result.next_attempt_at)
        remaining_s = max(0.0, due_ms / 1000 - clock())
        topic = layout.tier_for_delay(remaining_s) or layout.tier_topic(layout.tiers_s[0])
        headers = _failure_headers(result, source, attempt=result.attempt + 1, due_ms=due_ms)
        return Action(publish=(_forward(topic, source, headers), _lifecycle(result, layout)))
    if o in (Outcome.DEAD, Outcome.POISON):
        reason = result.dlt_reason or DeadLetterReason.POISON
        headers = _failure_headers(
            result, source, attempt=result.attempt, due_ms=result.due_ms or 0, reason=reason
        )
        out = [_forward(layout.dead_letter, source, headers)]
        if o is Outcome.DEAD:
            out.append(_lifecycle(result, layout))
        return Action(publish=tuple(out))
    # APPLIED, SUPERSEDED, CANCELLED: tell subscribers, commit.
    return Action(publish=(_lifecycle(result, layout),))


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else to_epoch_ms(moment)


def _forward(topic: str, source: Source, headers: RecordHeaders) -> OutRecord:
    # The original key and value travel unchanged; only the header set is rebuilt.
    return OutRecord(topic, source.key, source.value, headers.encode())


def _failure_headers(
    result: AttemptResult,
    source: Source,
    *,
    attempt: int,
    due_ms: int,
    reason: DeadLetterReason | None = None,
) -> RecordHeaders:
    return RecordHeaders(
        attempt=attempt,
        due_ms=due_ms,
        first_failure_ms=_ms(result.first_failure_at),
        origin_topic=source.coords.topic,
        origin_partition=source.coords.partition,
        origin_offset=source.coords.offset,
        origin_group=source.group_id,
        error_class=result.error_class,
        error_message=result.error_message,
        dlt_reason=reason,
        traceparent=result.traceparent,
    )


_LIFECYCLE_TYPE = {
    Outcome.APPLIED: LifecycleType.APPLIED,
    Outcome.RETRY: LifecycleType.RETRY_SCHEDULED,
    Outcome.DEAD: LifecycleType.DEAD_LETTERED,
    Outcome.SUPERSEDED: LifecycleType.SUPERSEDED,
    Outcome.CANCELLED: LifecycleType.CANCELLED,
}


def _lifecycle(result: AttemptResult, layout: TopicLayout) -> OutRecord:
    assert result.schedule_id is not None
    assert result.flag_key is not None
    event = LifecycleEvent(
        type=_LIFECYCLE_TYPE[result.outcome],
        schedule_id=result.schedule_id,
        flag_key=result.flag_key,
        attempt=result.attempt,
        occurred_at=datetime.now(UTC),
        scheduled_at=result.scheduled_at,
        next_attempt_at=result.next_attempt_at,
        error_class=result.error_class,
        error_message=result.error_message,
        reason=result.dlt_reason.value if result.dlt_reason else None,
        superseded_by=result.superseded_by,
        flag_version=result.flag_version,
        replay=result.replay,
    )
    # Subscribers can continue the schedule's trace from the attempt that produced it.
    headers = [(TRACEPARENT, result.traceparent.encode())] if result.traceparent else []
    return OutRecord(
        layout.lifecycle, result.flag_key.encode(), event.model_dump_json().encode(), headers
    )
