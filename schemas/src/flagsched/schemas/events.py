"""Event payloads carried on flagsched's topics (JSON, UTF-8).

The payload of a schedule-due record never changes between hops: a retry or a
dead-letter record carries the original key and value, and what changes (the
attempt, the due time, the last error) travels in headers (see headers.py).
"""

from __future__ import annotations

import os
import random
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from flagsched.schemas.error_message import ErrorMessage

SCHEDULE_DUE_VERSION: Final = 1
LIFECYCLE_VERSION: Final = 1
CONTROL_VERSION: Final = 1

# Random version-4 UUIDs from a generator seeded once per process from the OS: unique
# like uuid.uuid4() (122 random bits), without a getrandom() system call per event,
# which was 4-7 % of a busy worker's CPU (one lifecycle event per attempt).
_IDS = random.Random(os.urandom(32))  # ids, not secrets
# A forked child reseeds, or it would repeat its parent's ids.
os.register_at_fork(after_in_child=lambda: _IDS.seed(os.urandom(32)))


def new_event_id() -> uuid.UUID:
    """A fresh random (version 4) event id."""
    return uuid.UUID(int=_IDS.getrandbits(128), version=4)


#: The pattern of a flag key; migration 0005 checks ``flag_schedules.flag_key`` with the same.
FLAG_KEY_PATTERN: Final = r"^[A-Za-z0-9._:-]+$"
FlagKey = Annotated[str, Field(min_length=1, max_length=200, pattern=FLAG_KEY_PATTERN)]
#: A schedule id is a PostgreSQL ``bigint``: a larger one cannot name a row.
ScheduleId = Annotated[int, Field(ge=1, le=2**63 - 1)]
#: Bounds on the free text of a control event (the whole record is bounded too, see
#: CONTROL_MAX_BYTES): whoever can write the control topic cannot flood the logs.
WORKER_ID_MAX_CHARS: Final = 200
CONTROL_REASON_MAX_CHARS: Final = 500
CONTROL_MAX_BYTES: Final = 2048


class _Event(BaseModel):
    """A record the workers act on: decoded strictly (an unknown field is poison), so a
    new field needs a new ``schema_version`` (docs/subscribers.md, "Schema evolution")."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class _Announcement(BaseModel):
    """A record read by subscribers (and by flagsched's own notifier and workers): within
    a version, fields are only ever added, and readers ignore the ones they do not know.
    Forbidding them here would make every subscriber that decodes with this package
    refuse the first event of a newer producer."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Priority(StrEnum):
    """Which lane a schedule rides."""

    NORMAL = "normal"
    CRITICAL = "critical"


class ScheduleDue(_Event):
    """A wake-up: schedule ``schedule_id`` of ``flag_key`` is due at ``scheduled_at``.

    Keyed by ``flag_key`` so that every event of one flag lands in one partition.
    The database row is the truth; this event only names it.
    """

    schema_version: Literal[1] = SCHEDULE_DUE_VERSION
    event_id: uuid.UUID = Field(default_factory=new_event_id)
    schedule_id: ScheduleId
    flag_key: FlagKey
    scheduled_at: AwareDatetime
    priority: Priority = Priority.NORMAL
    dispatched_at: AwareDatetime


class LifecycleType(StrEnum):
    """What happened to a schedule."""

    APPLIED = "applied"
    RETRY_SCHEDULED = "retry_scheduled"
    SUPERSEDED = "superseded"
    DEAD_LETTERED = "dead_lettered"
    CANCELLED = "cancelled"


class LifecycleEvent(_Announcement):
    """One transition of a schedule, for downstream subscribers (keyed by flag key)."""

    schema_version: Literal[1] = LIFECYCLE_VERSION
    event_id: uuid.UUID = Field(default_factory=new_event_id)
    type: LifecycleType
    schedule_id: ScheduleId
    flag_key: FlagKey
    attempt: int = Field(ge=1)
    occurred_at: AwareDatetime
    scheduled_at: AwareDatetime | None = None
    priority: Priority | None = Field(
        default=None,
        description="the schedule's lane (null from producers before 2026-12-01)",
    )
    next_attempt_at: AwareDatetime | None = Field(
        default=None, description="retry_scheduled: when the next attempt is due"
    )
    error_class: str | None = None
    error_message: ErrorMessage | None = None
    reason: str | None = Field(
        default=None, description="dead_lettered: exhausted | permanent | poison"
    )
    superseded_by: int | None = Field(
        default=None, description="superseded: the schedule id whose change is newer"
    )
    flag_version: int | None = Field(default=None, description="applied: the flag's new version")
    replay: bool = Field(
        default=False,
        description="true when a redelivered record re-sent the event of an attempt already"
        " recorded; subscribers de-duplicate on (schedule_id, type, attempt)",
    )


class BreakerState(StrEnum):
    """Circuit-breaker states shared on the control topic."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class ControlEvent(_Announcement):
    """Cluster-wide coordination record on the compacted control topic."""

    schema_version: Literal[1] = CONTROL_VERSION
    kind: Literal["breaker"] = "breaker"
    state: BreakerState
    worker_id: str = Field(min_length=1, max_length=WORKER_ID_MAX_CHARS)
    reason: str = Field(default="", max_length=CONTROL_REASON_MAX_CHARS)
    at: AwareDatetime


EVENT_MODELS: dict[str, type[BaseModel]] = {
    "schedule-due": ScheduleDue,
    "lifecycle": LifecycleEvent,
    "control": ControlEvent,
}


def to_epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: flagsched uses timezone-aware UTC only")
    return int(moment.timestamp() * 1000)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_epoch_us(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime, exactly (PostgreSQL's precision)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: flagsched uses timezone-aware UTC only")
    return (moment - _EPOCH) // timedelta(microseconds=1)
