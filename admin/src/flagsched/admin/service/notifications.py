"""``GET /api/admin/notifications``: the notifier's deliveries, one page at a time.

The query is the one ``flagsched notify deliveries`` runs
(:func:`flagsched.admin.notifications.select_deliveries`); this adds the filter's
checks and the cursor (the last row's ``updated_at``, ``event_key`` and ``sink``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

from flagsched.admin.notifications import select_deliveries
from flagsched.admin.service.errors import InvalidInput
from flagsched.admin.service.paging import decode_cursor, encode_cursor
from flagsched.admin.service.report_models import DeliveryStatus, Notification, NotificationPage
from flagsched.runtime.db.connect import DictConnection


@dataclass(frozen=True)
class NotificationFilter:
    """Which deliveries a page shows; every field given narrows it."""

    status: list[DeliveryStatus] = field(default_factory=list)
    sink: str | None = None
    rule: str | None = None
    kind: str | None = None
    schedule_id: int | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None


def _after(cursor: str) -> tuple[datetime, str, str]:
    key = decode_cursor(cursor, "cursor")
    try:
        at, event_key, sink = key
        when = datetime.fromisoformat(at)
    except (TypeError, ValueError) as exc:
        raise InvalidInput("cursor", "not a cursor of this list") from exc
    if when.tzinfo is None:
        raise InvalidInput("cursor", "not a cursor of this list")
    return when, str(event_key), str(sink)


def list_notifications(
    conn: DictConnection, f: NotificationFilter, *, limit: int = 50, cursor: str | None = None
) -> NotificationPage:
    """One page of deliveries matching ``f``, newest first."""
    if f.updated_after and f.updated_before and f.updated_after >= f.updated_before:
        raise InvalidInput("updated_before", "must be later than updated_after")
    rows = select_deliveries(
        conn,
        statuses=f.status,
        sink=f.sink,
        rule=f.rule,
        kind=f.kind,
        schedule_id=f.schedule_id,
        updated_after=f.updated_after,
        updated_before=f.updated_before,
        after=_after(cursor) if cursor else None,
        limit=limit + 1,
    )
    items = [Notification.model_validate(asdict(r)) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor([last.updated_at.isoformat(), last.event_key, last.sink])
    return NotificationPage(items=items, next_cursor=next_cursor)
