"""The example messages of the AsyncAPI document.

They are built with the event models and the header set, so they are exactly what
flagsched emits: one example per message, two for lifecycle events.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from flagsched.schemas import headers as h
from flagsched.schemas.error_classes import ErrorClass
from flagsched.schemas.events import (
    BreakerState,
    ControlEvent,
    LifecycleEvent,
    LifecycleType,
    ScheduleDue,
    to_epoch_ms,
)
from flagsched.schemas.topics import DEFAULT_GROUP_ID, TopicLayout

_AT = datetime(2025, 1, 1, tzinfo=UTC)
_NEXT = datetime(2025, 1, 1, 0, 0, 4, 250000, tzinfo=UTC)
_FAILED = datetime(2025, 1, 1, 0, 0, 0, 120000, tzinfo=UTC)
_DUE = ScheduleDue(
    event_id=uuid.UUID("6f1c2c1e-2f55-4d0c-9a55-0c8f4f1d2a10"),
    schedule_id=42,
    flag_key="checkout.new-flow",
    scheduled_at=_AT,
    dispatched_at=datetime(2025, 1, 1, 0, 0, 0, 35000, tzinfo=UTC),
)
_ERROR = "LockNotAvailable: canceling statement due to lock timeout"


def _headers(headers: h.RecordHeaders) -> dict[str, str]:
    return {k: v.decode("utf-8") for k, v in headers.encode()}


def _failure(layout: TopicLayout, attempt: int, due: datetime, **kw: Any) -> h.RecordHeaders:
    return h.RecordHeaders(
        attempt=attempt,
        due_ms=to_epoch_ms(due),
        first_failure_ms=to_epoch_ms(_FAILED),
        origin_topic=layout.due if attempt == 2 else layout.tier_topic(layout.tiers_s[0]),
        origin_partition=3,
        origin_offset=1207,
        origin_group=DEFAULT_GROUP_ID,
        error_class=ErrorClass.LOCK_CONTENTION.value,
        error_message=_ERROR,
        **kw,
    )


def _lifecycle(kind: LifecycleType, **kw: Any) -> dict[str, Any]:
    event = LifecycleEvent(
        event_id=uuid.UUID("0b7e5a8e-5d3f-4a86-8a53-3f0f0a3c9e41"),
        type=kind,
        schedule_id=_DUE.schedule_id,
        flag_key=_DUE.flag_key,
        scheduled_at=_DUE.scheduled_at,
        **kw,
    )
    return event.model_dump(mode="json")


def examples(mid: str, layout: TopicLayout) -> list[dict[str, Any]]:
    """The examples of message ``mid`` with the topic names of ``layout``."""
    due = _DUE.model_dump(mode="json")
    if mid == "scheduleDue":
        first = h.RecordHeaders(attempt=1, due_ms=to_epoch_ms(_AT))
        return [{"name": "first-attempt", "headers": _headers(first), "payload": due}]
    if mid == "scheduleRetry":
        retry = _failure(layout, 2, _NEXT)
        return [{"name": "second-attempt", "headers": _headers(retry), "payload": due}]
    if mid == "scheduleDeadLetter":
        dead = _failure(layout, 6, _NEXT, dlt_reason=h.DeadLetterReason.EXHAUSTED)
        return [{"name": "exhausted", "headers": _headers(dead), "payload": due}]
    if mid == "lifecycleEvent":
        return [
            {
                "name": "retry-scheduled",
                "payload": _lifecycle(
                    LifecycleType.RETRY_SCHEDULED,
                    attempt=1,
                    occurred_at=_FAILED,
                    next_attempt_at=_NEXT,
                    error_class=ErrorClass.LOCK_CONTENTION.value,
                    error_message=_ERROR,
                ),
            },
            {
                "name": "applied",
                "payload": _lifecycle(
                    LifecycleType.APPLIED, attempt=2, occurred_at=_NEXT, flag_version=7
                ),
            },
        ]
    control = ControlEvent(state=BreakerState.OPEN, worker_id="worker-a", at=_AT, reason="")
    return [{"name": "breaker-open", "payload": control.model_dump(mode="json")}]
