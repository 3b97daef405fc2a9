"""Kafka records to notices, with the contract's models (flagsched.schemas).

* lifecycle: ``dead_lettered`` and ``retry_scheduled`` as they are, ``applied`` after
  retries (attempt > 1) as ``applied_after_retries``; every ``applied`` schedule id is
  also returned, to resolve incidents (store.resolve_applied);
* dead-letter: only ``poison`` records, which have no lifecycle event (the others
  are announced by their lifecycle event: one event, one notice);
* control: breaker opened / closed, unless older than ``breaker_max_age_s``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from flagsched.notifier.config import EventKind
from flagsched.notifier.notice import Notice
from flagsched.schemas.errors import PoisonRecord
from flagsched.schemas.events import BreakerState, ControlEvent, LifecycleEvent, LifecycleType
from flagsched.schemas.headers import TRACEPARENT, DeadLetterReason, RecordHeaders
from flagsched.schemas.topics import TopicLayout

log = logging.getLogger(__name__)

_LIFECYCLE_KIND = {
    LifecycleType.DEAD_LETTERED: EventKind.DEAD_LETTERED,
    LifecycleType.RETRY_SCHEDULED: EventKind.RETRY_SCHEDULED,
}


@dataclass
class Decoded:
    """What a batch of records says: notices (with their record), applied schedules."""

    notices: list[tuple[Notice, Any]] = field(default_factory=list)
    applied: list[Notice] = field(default_factory=list)


def _trace_id(headers: Any) -> str | None:
    for key, value in headers or ():
        if key == TRACEPARENT and value:
            parts = value.decode("ascii", "replace").split("-")
            return parts[1] if len(parts) == 4 else None
    return None


class RecordDecoder:
    """Turns records of the three topics into notices."""

    def __init__(self, layout: TopicLayout, *, breaker_max_age_s: float) -> None:
        self._layout = layout
        self._max_age = timedelta(seconds=breaker_max_age_s)

    @property
    def topics(self) -> list[str]:
        """What the notifier subscribes to."""
        return [self._layout.lifecycle, self._layout.dead_letter, self._layout.control]

    def decode(self, records: list[Any], into: Decoded) -> None:
        """Add what ``records`` say to ``into``; malformed records are logged and skipped."""
        for rec in records:
            try:
                if rec.topic == self._layout.lifecycle:
                    self._lifecycle(rec, into)
                elif rec.topic == self._layout.dead_letter:
                    self._dead_letter(rec, into)
                elif rec.topic == self._layout.control:
                    self._control(rec, into)
            except (ValidationError, ValueError, TypeError) as exc:
                log.warning(
                    "skipping a malformed record topic=%s partition=%s offset=%s: %s",
                    rec.topic,
                    rec.partition,
                    rec.offset,
                    str(exc).splitlines()[0],
                )

    def _lifecycle(self, rec: Any, into: Decoded) -> None:
        event = LifecycleEvent.model_validate_json(rec.value)
        kind = _LIFECYCLE_KIND.get(event.type)
        if event.type is LifecycleType.APPLIED:
            kind = EventKind.APPLIED_AFTER_RETRIES if event.attempt > 1 else None
        notice = Notice(
            key=f"lifecycle:{event.schedule_id}:{event.type.value}:{event.attempt}",
            kind=kind or EventKind.APPLIED_AFTER_RETRIES,
            occurred_at=event.occurred_at,
            schedule_id=event.schedule_id,
            flag_key=event.flag_key,
            priority=event.priority,
            attempt=event.attempt,
            error_class=event.error_class,
            error_message=event.error_message,
            reason=event.reason,
            next_attempt_at=event.next_attempt_at,
            trace_id=_trace_id(rec.headers),
        )
        if event.type is LifecycleType.APPLIED:
            into.applied.append(notice)
        if kind is not None:
            into.notices.append((notice, rec))

    def _dead_letter(self, rec: Any, into: Decoded) -> None:
        try:
            headers = RecordHeaders.decode(rec.headers)
        except PoisonRecord:
            headers = None  # headers this broken only come with a poison record
        if headers is not None and headers.dlt_reason is not DeadLetterReason.POISON:
            return  # announced by its lifecycle event
        moment = datetime.fromtimestamp(rec.timestamp / 1000, UTC) if rec.timestamp else None
        notice = Notice(
            key=f"dead-letter:{rec.partition}:{rec.offset}",
            kind=EventKind.DEAD_LETTERED,
            occurred_at=moment or datetime.now(UTC),
            reason=DeadLetterReason.POISON.value,
            error_class="poison",
            error_message=headers.error_message if headers else None,
            detail=f"{rec.topic}[{rec.partition}]@{rec.offset}",
            trace_id=_trace_id(rec.headers),
        )
        into.notices.append((notice, rec))

    def _control(self, rec: Any, into: Decoded) -> None:
        event = ControlEvent.model_validate_json(rec.value)
        kind = {
            BreakerState.OPEN: EventKind.BREAKER_OPENED,
            BreakerState.CLOSED: EventKind.BREAKER_CLOSED,
        }.get(event.state)
        if kind is None or datetime.now(UTC) - event.at > self._max_age:
            return
        notice = Notice(
            key=f"control:{rec.partition}:{rec.offset}",
            kind=kind,
            occurred_at=event.at,
            detail=f"{event.reason} (worker {event.worker_id})".strip(),
        )
        into.notices.append((notice, rec))
