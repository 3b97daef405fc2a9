"""Requests and responses of the admin actions: the one contract for the HTTP API (its
OpenAPI document is generated from these) and for the CLI's ``--json`` output."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictInt,
    WithJsonSchema,
    model_validator,
)

from flagsched.schemas.events import FlagKey, Priority
from flagsched.schemas.retry import PlannedAttempt, PolicyOverride

Status = Literal["pending", "dispatched", "retrying", "applied", "cancelled", "superseded", "dead"]
#: Statuses from which a schedule can still change a flag.
LIVE: tuple[Status, ...] = ("pending", "dispatched", "retrying")
Role = Literal["viewer", "operator", "admin"]


def _rfc3339_utc(v: datetime) -> str:
    # RFC 3339 in UTC with a Z, whatever zone the database session used.
    return v.astimezone(UTC).isoformat().replace("+00:00", "Z")


#: A time in a response: RFC 3339, UTC, ``Z``.
UtcTime = Annotated[
    datetime,
    PlainSerializer(_rfc3339_utc, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class ResponseModel(BaseModel):
    """The base of every response model of the API (also service/report_models.py and
    service/bulk_models.py)."""

    model_config = ConfigDict(frozen=True)


class RequestModel(BaseModel):
    """The base of every request model of the API: an unknown field is a 4xx naming it."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Updates(RequestModel):
    """The flag fields a schedule sets; at least one."""

    enabled: StrictBool | None = None
    rollout_percentage: Annotated[StrictInt, Field(ge=0, le=100)] | None = None
    config: dict[str, Any] | None = Field(default=None, description="replaces the flag's config")

    @model_validator(mode="after")
    def _sets_something(self) -> Self:
        if not self.fields():
            raise ValueError("updates must set at least one of enabled, rollout_percentage, config")
        return self

    def fields(self) -> dict[str, Any]:
        """The fields this update sets."""
        return self.model_dump(exclude_none=True)


RETRY_POLICY_DOC = (
    "A partial retry policy; absent keys inherit the global FLAGSCHED_* defaults. Keys:"
    " max_retries (retries after the first attempt, >= 0), base_s (first delay, s, > 0),"
    " multiplier (>= 1), cap_s (largest delay, s), floor_s (smallest delay after jitter, s),"
    " jitter (none | full | equal | decorrelated). Delay before retry n ="
    " clamp(jitter(min(cap_s, base_s * multiplier^(n-1))), floor_s, cap_s). Per error class"
    " the worker first applies built-in adjustments (lock_contention: base_s 0.5, cap_s 30;"
    " deadlock and serialization: base_s 0.2, cap_s 10); keys set here always win."
)


class ScheduleCreate(RequestModel):
    """A new scheduled change of one flag."""

    updates: Updates
    scheduled_at: AwareDatetime = Field(description="RFC 3339 with an offset; past means now")
    priority: Priority = Priority.NORMAL
    retry_policy: PolicyOverride | None = Field(default=None, description=RETRY_POLICY_DOC)
    max_retries: Annotated[int, Field(ge=0, le=1000)] | None = Field(
        default=None, description="retries after the first attempt; overrides retry_policy's"
    )


class ScheduleEdit(RequestModel):
    """Fields to change on a schedule that has not been applied yet (absent: unchanged)."""

    updates: Updates | None = None
    scheduled_at: AwareDatetime | None = None
    priority: Priority | None = None
    retry_policy: PolicyOverride | None = Field(default=None, description=RETRY_POLICY_DOC)
    max_retries: Annotated[int, Field(ge=0, le=1000)] | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("nothing to change: give at least one field")
        return self


class Conflict(ResponseModel):
    """Another live schedule of the flag that sets some of the same fields nearby in time."""

    schedule_id: int
    scheduled_at: UtcTime
    status: Status
    fields: list[str]


class Schedule(ResponseModel):
    """A schedule row as the API shows it."""

    id: int
    flag_key: str
    updates: dict[str, Any]
    scheduled_at: UtcTime
    priority: Priority
    status: Status
    retry_count: int
    max_retries: int | None
    retry_policy: dict[str, Any] | None
    next_retry_at: UtcTime | None
    last_error: str | None
    last_error_class: str | None
    first_failed_at: UtcTime | None
    dispatched_at: UtcTime | None
    finished_at: UtcTime | None
    finished_attempt: int | None
    superseded_by: int | None
    created_at: UtcTime
    updated_at: UtcTime


class Created(ResponseModel):
    """The response of a create."""

    schedule: Schedule
    scheduled_in_past: bool = Field(description="the requested time had passed: it runs now")
    requested_scheduled_at: UtcTime
    conflicts: list[Conflict]


class Attempt(ResponseModel):
    """One recorded attempt of a schedule."""

    attempt: int
    started_at: UtcTime
    finished_at: UtcTime
    due_at: UtcTime | None
    lateness_ms: float | None
    outcome: str
    error_class: str | None
    error_message: str | None
    dlt_reason: str | None
    next_attempt_at: UtcTime | None
    worker: str | None
    trace_id: str | None
    trace_url: str | None


class ScheduleDetail(ResponseModel):
    """A schedule with its attempts and, while retrying, the planned remaining attempts."""

    schedule: Schedule
    attempts: list[Attempt]
    plan: list[PlannedAttempt]


class Page(ResponseModel):
    """One page of schedules; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[Schedule]
    next_cursor: str | None


class RetryAction(StrEnum):
    """What a manual retry did."""

    RUN_NOW = "run_now"  # a retrying schedule: its next attempt runs now
    REOPENED = "reopened"  # a dead schedule: re-opened with one more attempt


class Retried(ResponseModel):
    """The response of a manual retry."""

    action: RetryAction
    attempt: int = Field(description="the attempt that runs now")
    max_retries: int = Field(description="the schedule's retry budget after this call")
    expected_superseded: bool = Field(
        description="newer changes have set every field: the worker will mark it superseded"
    )
    schedule: Schedule


class Cancelled(ResponseModel):
    """The response of a cancel."""

    schedule: Schedule
    attempt: int = Field(description="the attempt recorded as cancelled")


class PolicyPreviewRequest(RequestModel):
    """A policy to preview (absent keys: the global defaults) and an optional failure time."""

    retry_policy: PolicyOverride | None = Field(default=None, description=RETRY_POLICY_DOC)
    max_retries: Annotated[int, Field(ge=0, le=1000)] | None = None
    failed_at: AwareDatetime | None = Field(default=None, description="default: now")
    schedule_id: Annotated[int, Field(ge=1)] = Field(default=1, description="seeds the jitter")
    error_class: str | None = Field(default=None, description="applies its adjustment")


class Preview(ResponseModel):
    """A retry timeline: each attempt with its delay and the delay tiers it hops through."""

    policy: dict[str, Any]
    failed_at: UtcTime
    attempts: list[PlannedAttempt]


class DeadLetter(ResponseModel):
    """A dead schedule with its last attempt."""

    schedule_id: int
    flag_key: str
    attempt: int | None
    error_class: str | None
    error_message: str | None
    reason: str | None
    dead_at: UtcTime | None


class DeadLetterPage(ResponseModel):
    """One page of dead letters."""

    items: list[DeadLetter]
    next_cursor: str | None


class DeadLetterFilter(RequestModel):
    """Which dead schedules a list or a redrive selects."""

    flag_key: FlagKey | None = None
    flag_prefix: Annotated[str, Field(max_length=200, pattern=r"^[A-Za-z0-9._:-]*$")] | None = None
    error_class: str | None = None
    reason: Literal["exhausted", "permanent"] | None = None
    dead_after: AwareDatetime | None = None
    dead_before: AwareDatetime | None = None


class RedriveRequest(RequestModel):
    """A redrive of dead schedules, by filter or by explicit ids."""

    filter: DeadLetterFilter | None = None
    schedule_ids: Annotated[list[Annotated[int, Field(ge=1)]], Field(max_length=10_000)] | None = (
        None
    )
    dry_run: bool = Field(default=True, description="only count and sample (the default)")
    limit: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="at most this many (and never above FLAGSCHED_ADMIN_REDRIVE_MAX)"
    )
    rate_per_s: Annotated[float, Field(gt=0, le=10_000)] | None = Field(
        default=None,
        description="schedules re-armed per second (FLAGSCHED_ADMIN_REDRIVE_RATE_PER_S)",
    )


class RedrivePlan(ResponseModel):
    """What a redrive selects: the count, those it would skip and a sample."""

    count: int = Field(description="dead schedules selected (after the limit)")
    would_skip: int = Field(description="of those, whose flag has moved on (would supersede)")
    sample: list[DeadLetter]


class Redrive(ResponseModel):
    """A redrive job and its progress."""

    id: int
    status: Literal["running", "done", "failed"]
    total: int
    position: int
    redriven: int
    skipped: int
    skipped_ids: list[int]
    rate_per_s: float
    created_by: str
    created_at: UtcTime
    finished_at: UtcTime | None
    error: str | None


class PoisonRecord(ResponseModel):
    """A dead letter with no schedule row, read from the dead-letter topic."""

    partition: int
    offset: int
    timestamp: UtcTime
    key: str | None
    value_preview: str = Field(description="the first 512 bytes of the value, as UTF-8")
    value_escaped: str = Field(
        description="the same bytes as printable ASCII: other bytes as \\xNN, a backslash doubled"
    )
    value_bytes: int
    error_class: str | None
    error_message: str | None
    origin_topic: str | None


class PoisonPage(ResponseModel):
    """Poison records, newest first (from the last records of each partition)."""

    items: list[PoisonRecord]


class PoisonRepublish(RequestModel):
    """Which poison record to republish, and optionally where (default: its origin)."""

    partition: Annotated[int, Field(ge=0)]
    offset: Annotated[int, Field(ge=0)]
    topic: Annotated[str, Field(max_length=249)] | None = Field(
        default=None, description="a topic the workers consume; default: the origin topic"
    )


class Republished(ResponseModel):
    """The response of a republish."""

    dead_letter: str = Field(description="<dead-letter topic>:<partition>:<offset>")
    topic: str
    attempt: int


class AuditEntry(ResponseModel):
    """One row of the audit trail."""

    id: int
    at: UtcTime
    actor: str
    role: str
    action: str
    object_type: str
    object_ids: list[str]
    before: Any
    after: Any
    request_id: str | None
    idempotency_key: str | None
    source_address: str | None


class AuditPage(ResponseModel):
    """One page of the audit trail, newest first."""

    items: list[AuditEntry]
    next_cursor: str | None
