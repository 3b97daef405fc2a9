"""How one record ended: the :class:`Outcome` tag, what each outcome means, and the
results themselves.

Every record a worker touches ends in exactly one :data:`AttemptResult`, a tagged
union with one frozen class per :class:`Outcome`, each holding only what that outcome
has (a retry its next due time, a hold its wake time, a hop its tier). Every ``match``
on a result ends in ``assert_never``, so mypy proves that each site handles every kind.
consumer/outcome.py decides what the worker does with one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import ClassVar, TypeAlias, assert_never

from flagsched.schemas.events import LifecycleType, Priority
from flagsched.schemas.headers import DeadLetterReason, RecordHeaders


class Outcome(StrEnum):
    """How one record ended (the tag of :data:`AttemptResult`)."""

    APPLIED = "applied"
    RETRY = "retry"
    DEAD = "dead"
    SUPERSEDED = "superseded"
    CANCELLED = "cancelled"
    DROP = "drop"  # stale or duplicate: nothing to do but commit
    POISON = "poison"  # undecodable: dead letter without a schedule
    HOLD = "hold"  # not due yet: pause the partition until the wake time
    HOP = "hop"  # in a tier with time left: move to a smaller tier
    DEFER = "defer"  # an older schedule of its flag is held elsewhere: wait, no attempt
    PAUSE = "pause"  # infrastructure failure: no attempt consumed, retry in place

    # What each outcome means, in one place (metrics, logs, the breaker and bookkeeping
    # ask these instead of keeping sets of their own).
    @property
    def is_attempt(self) -> bool:
        """The worker tried the record (``flagsched_attempts_total``): the database was
        asked, or it failed (pause), or the record was judged poison. Holds, hops and
        drops are not attempts, nor is a deferral (due order: the record waits for an
        older schedule of its flag). Only a pause uses up no attempt number."""
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
        return self in LIFECYCLE_TYPE

    @property
    def is_failure(self) -> bool:
        """The attempt failed (its span's status is ERROR): retry, dead, poison, pause."""
        return self in _FAILURES

    @property
    def is_routine(self) -> bool:
        """Nothing an operator needs to read in the log (held, dropped, hopped, applied)."""
        return self in _ROUTINE


_NOT_ATTEMPTS = frozenset({Outcome.HOLD, Outcome.HOP, Outcome.DROP, Outcome.DEFER})
_NO_DATABASE = frozenset({Outcome.HOLD, Outcome.HOP, Outcome.POISON, Outcome.PAUSE})
_TERMINAL = frozenset({Outcome.APPLIED, Outcome.DEAD, Outcome.SUPERSEDED, Outcome.CANCELLED})
_FAILURES = frozenset({Outcome.RETRY, Outcome.DEAD, Outcome.POISON, Outcome.PAUSE})
_ROUTINE = frozenset({Outcome.HOLD, Outcome.DROP, Outcome.APPLIED, Outcome.HOP})
#: The lifecycle event each outcome that has one sends.
LIFECYCLE_TYPE = {
    Outcome.APPLIED: LifecycleType.APPLIED,
    Outcome.RETRY: LifecycleType.RETRY_SCHEDULED,
    Outcome.DEAD: LifecycleType.DEAD_LETTERED,
    Outcome.SUPERSEDED: LifecycleType.SUPERSEDED,
    Outcome.CANCELLED: LifecycleType.CANCELLED,
}


# --- the results, one class per outcome ----------------------------------------------
# Recorded outcomes (an attempt row says so) share: the schedule, its due time, the
# attempt's lateness (None on a replay: the attempt was measured when it was recorded),
# ``replay`` (side effects of an attempt already recorded, sent again), the traceparent
# of the attempt's span, and ``also_applied``: older schedules of the flag the attempt
# applied first, in due order (consumer/dueorder.py), whose lifecycle events go out with
# this record's.


@dataclass(frozen=True, kw_only=True)
class Applied:
    """The schedule's change took effect."""

    outcome: ClassVar[Outcome] = Outcome.APPLIED
    attempt: int
    schedule_id: int
    flag_key: str
    scheduled_at: datetime
    priority: Priority  # the schedule row's lane, for the lifecycle event
    flag_version: int | None  # None only for a replay whose change-log row is gone
    lateness_ms: float | None = None
    replay: bool = False
    traceparent: str | None = None
    also_applied: tuple[Applied, ...] = ()


@dataclass(frozen=True, kw_only=True)
class RetryScheduled:
    """The attempt failed with a retryable error; the next one is due at ``next_attempt_at``."""

    outcome: ClassVar[Outcome] = Outcome.RETRY
    attempt: int
    schedule_id: int
    flag_key: str
    scheduled_at: datetime
    priority: Priority  # the schedule row's lane, for the lifecycle event
    error_class: str
    error_message: str
    next_attempt_at: datetime
    first_failure_at: datetime | None
    lateness_ms: float | None = None
    replay: bool = False
    traceparent: str | None = None
    also_applied: tuple[Applied, ...] = ()


@dataclass(frozen=True, kw_only=True)
class DeadLettered:
    """The schedule failed for good (permanent or exhausted): dead letter and lifecycle."""

    outcome: ClassVar[Outcome] = Outcome.DEAD
    attempt: int
    schedule_id: int
    flag_key: str
    scheduled_at: datetime
    priority: Priority  # the schedule row's lane, for the lifecycle event
    error_class: str
    error_message: str
    reason: DeadLetterReason
    first_failure_at: datetime | None
    due_ms: int | None  # None only for a replay of an attempt row without a due time
    lateness_ms: float | None = None
    replay: bool = False
    traceparent: str | None = None
    also_applied: tuple[Applied, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Superseded:
    """Every field the schedule sets was set by a newer schedule: nothing changed."""

    outcome: ClassVar[Outcome] = Outcome.SUPERSEDED
    attempt: int
    schedule_id: int
    flag_key: str
    scheduled_at: datetime
    priority: Priority  # the schedule row's lane, for the lifecycle event
    superseded_by: int | None  # None only for a replay of a row without it
    lateness_ms: float | None = None
    replay: bool = False
    traceparent: str | None = None
    also_applied: tuple[Applied, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Cancelled:
    """The schedule was cancelled before this attempt."""

    outcome: ClassVar[Outcome] = Outcome.CANCELLED
    attempt: int
    schedule_id: int
    flag_key: str
    scheduled_at: datetime
    priority: Priority  # the schedule row's lane, for the lifecycle event
    lateness_ms: float | None = None
    replay: bool = False
    traceparent: str | None = None
    also_applied: tuple[Applied, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Dropped:
    """A stale, duplicate or superseded wake-up: committed, nothing else. ``why`` is kept
    for tests and debugging, not logged (duplicates are routine)."""

    outcome: ClassVar[Outcome] = Outcome.DROP
    attempt: int
    schedule_id: int
    flag_key: str
    why: str
    also_applied: tuple[Applied, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Poison:
    """A record no attempt can be made of: dead-lettered with no lifecycle event. The
    schedule is known when the record decoded (and, say, names a missing schedule)."""

    outcome: ClassVar[Outcome] = Outcome.POISON
    attempt: int
    error_class: str
    error_message: str
    reason: DeadLetterReason
    due_ms: int | None  # None when not even the headers decoded
    schedule_id: int | None = None
    flag_key: str | None = None
    traceparent: str | None = None
    also_applied: tuple[Applied, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Held:
    """Not due yet: the partition is paused and sought back until ``until_ms``."""

    outcome: ClassVar[Outcome] = Outcome.HOLD
    attempt: int
    until_ms: int
    carried: RecordHeaders  # what judge() decoded: a rotation re-publishes these


@dataclass(frozen=True, kw_only=True)
class Hopped:
    """In a delay tier with time left: forwarded, unchanged but for its trace, to ``topic``."""

    outcome: ClassVar[Outcome] = Outcome.HOP
    attempt: int
    schedule_id: int
    flag_key: str
    topic: str
    carried: RecordHeaders  # same attempt, due time and failure history


@dataclass(frozen=True, kw_only=True)
class Deferred:
    """Due order: an older schedule of the flag, not attempted yet, is held by another
    transaction (a dispatcher still claiming it, another worker attempting it), so this
    one must not take effect yet. Nothing is recorded and no attempt is used up: the
    record goes round the smallest tier with ``carried`` (its headers, the wait counted
    in ``order_waits``) and is tried again a tier later (consumer/dueorder.py)."""

    outcome: ClassVar[Outcome] = Outcome.DEFER
    attempt: int
    schedule_id: int
    flag_key: str
    carried: RecordHeaders
    also_applied: tuple[Applied, ...] = ()  # always empty: nothing was applied


@dataclass(frozen=True, kw_only=True)
class Paused:
    """The database is unreachable: no attempt is used up, the record waits in place."""

    outcome: ClassVar[Outcome] = Outcome.PAUSE
    attempt: int
    schedule_id: int
    flag_key: str
    error_class: str


#: What a recorded attempt (an attempt row) ends in; each has a lifecycle event.
Recorded: TypeAlias = Applied | RetryScheduled | DeadLettered | Superseded | Cancelled
#: What attempting a due record in the database ends in (consumer/apply.py).
Attempted: TypeAlias = Recorded | Dropped | Poison | Deferred
#: How one record ended.
AttemptResult: TypeAlias = Attempted | Held | Hopped | Paused


@dataclass(frozen=True)
class Facts:
    """What logs, spans and metrics say of any result (None where its kind has none)."""

    schedule_id: int | None
    flag_key: str | None
    error_class: str | None
    error_message: str | None
    lateness_ms: float | None


def facts(result: AttemptResult) -> Facts:
    """The ids, error and lateness of ``result``, for reporting."""
    match result:
        case Applied() | Superseded() | Cancelled():
            return Facts(result.schedule_id, result.flag_key, None, None, result.lateness_ms)
        case RetryScheduled() | DeadLettered():
            return Facts(
                result.schedule_id,
                result.flag_key,
                result.error_class,
                result.error_message,
                result.lateness_ms,
            )
        case Poison():
            return Facts(
                result.schedule_id, result.flag_key, result.error_class, result.error_message, None
            )
        case Dropped():
            return Facts(result.schedule_id, result.flag_key, None, result.why, None)
        case Paused():
            return Facts(result.schedule_id, result.flag_key, result.error_class, None, None)
        case Hopped() | Deferred():
            return Facts(result.schedule_id, result.flag_key, None, None, None)
        case Held():
            return Facts(None, None, None, None, None)
        case _:
            assert_never(result)


def is_replay(result: AttemptResult) -> bool:
    """Side effects of an attempt already recorded, sent again (counted only as such)."""
    match result:
        case Applied() | RetryScheduled() | DeadLettered() | Superseded() | Cancelled():
            return result.replay
        case Dropped() | Poison() | Held() | Hopped() | Paused() | Deferred():
            return False
        case _:
            assert_never(result)


def brought(result: AttemptResult) -> tuple[Applied, ...]:
    """The older schedules ``result``'s attempt applied first (due order)."""
    match result:
        case (
            Applied()
            | RetryScheduled()
            | DeadLettered()
            | Superseded()
            | Cancelled()
            | Dropped()
            | Poison()
            | Deferred()
        ):
            return result.also_applied
        case Held() | Hopped() | Paused():
            return ()
        case _:
            assert_never(result)
