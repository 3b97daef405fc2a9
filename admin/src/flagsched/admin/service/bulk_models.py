"""Requests and responses of the bulk actions (cancel or retry every schedule a filter
selects). Part of the API's contract like service/models.py (the OpenAPI document is
generated from these)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field, field_validator

from flagsched.admin.service.models import (
    RequestModel,
    ResponseModel,
    Schedule,
    Status,
    UtcTime,
)
from flagsched.schemas.events import FlagKey, Priority


class ScheduleSelection(RequestModel):
    """Which schedules a bulk action selects: the schedule list's filters."""

    status: list[Status] = Field(default_factory=list, description="any of these")
    flag_key: FlagKey | None = None
    flag_prefix: Annotated[str, Field(max_length=200, pattern=r"^[A-Za-z0-9._:-]*$")] | None = None
    priority: Priority | None = None
    error_class: Annotated[str, Field(max_length=100)] | None = Field(
        default=None, description="the last error's class"
    )
    due_after: AwareDatetime | None = Field(default=None, description="scheduled_at >= this")
    due_before: AwareDatetime | None = Field(default=None, description="scheduled_at < this")

    def narrows(self) -> bool:
        """Whether any filter is set."""
        return any(v not in (None, []) for v in self.model_dump().values())


BulkKind = Literal["cancel", "retry"]


class BulkActionRequest(RequestModel):
    """Cancel or retry every schedule matching ``filter``, not only one page of them."""

    action: BulkKind = Field(
        description="cancel (pending, dispatched, retrying) or retry (retrying, dead)"
    )
    filter: ScheduleSelection = Field(description="at least one filter: never every schedule")
    dry_run: bool = Field(default=True, description="only count and sample (the default)")

    @field_validator("filter")
    @classmethod
    def _narrow(cls, v: ScheduleSelection) -> ScheduleSelection:
        if not v.narrows():
            raise ValueError("give at least one filter: a bulk action never selects every schedule")
        return v


class BulkPlan(ResponseModel):
    """What a bulk action would touch: those matching the filter that it applies to."""

    action: BulkKind
    count: int = Field(description="matching schedules in a status the action applies to")
    sample: list[Schedule]


class BulkAction(ResponseModel):
    """A bulk action and its progress."""

    id: int
    action: BulkKind
    status: Literal["running", "done", "failed"]
    filter: dict[str, Any]
    total: int
    position: int = Field(description="schedules processed so far")
    done: int = Field(description="of those, cancelled or retried")
    skipped: int = Field(description="of those, no longer in a status the action applies to")
    created_by: str
    created_at: UtcTime
    finished_at: UtcTime | None
    error: str | None
