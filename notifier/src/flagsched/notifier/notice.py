"""A notice: one event the notifier may tell someone about, decoded from a record.

Lifecycle events (retry scheduled, dead-lettered, applied), poison records on the
dead-letter topic (which have no lifecycle event) and breaker changes on the control
topic all become notices, so rules, digests and sinks see one shape.
"""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict

from flagsched.notifier.config import EventKind
from flagsched.schemas.events import Priority


class Notice(BaseModel):
    """One event, as rules and sinks see it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Unique per event, the same for a redelivered record: lifecycle events by
    #: (schedule, type, attempt) as docs/subscribers.md asks, others by topic coordinates.
    key: str
    kind: EventKind
    occurred_at: AwareDatetime
    schedule_id: int | None = None
    flag_key: str | None = None
    priority: Priority | None = None
    attempt: int | None = None
    error_class: str | None = None
    error_message: str | None = None
    reason: str | None = None
    next_attempt_at: AwareDatetime | None = None
    trace_id: str | None = None
    detail: str | None = None

    @property
    def subject(self) -> str:
        """What the dedup window compares: the same kind of event for the same schedule."""
        return f"{self.kind.value}:{self.schedule_id or '-'}"

    @property
    def headline(self) -> str:
        """One line for humans, e.g. ``schedule 42 (promo.banner) dead-lettered: ...``."""
        what = {
            EventKind.DEAD_LETTERED: "dead-lettered",
            EventKind.RETRY_SCHEDULED: "will be retried",
            EventKind.APPLIED_AFTER_RETRIES: "applied after retries",
            EventKind.BREAKER_OPENED: "circuit breaker opened",
            EventKind.BREAKER_CLOSED: "circuit breaker closed",
            EventKind.BACKLOG: "retry backlog over its threshold",
        }[self.kind]
        if self.kind is EventKind.BACKLOG:
            return f"flagsched {what}: {self.detail}"
        if self.schedule_id is None:
            subject = "flagsched" if self.kind.value.startswith("breaker") else "poison record"
        else:
            subject = f"schedule {self.schedule_id} ({self.flag_key})"
        cause = self.reason or ""
        if self.error_class:
            cause = f"{cause} {self.error_class}".strip()
        return f"{subject} {what}" + (f": {cause}" if cause else "")
