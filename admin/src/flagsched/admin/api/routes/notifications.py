"""``/api/admin/notifications``: what the notifier sent, is retrying, or dropped."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime

from flagsched.admin.api.auth import require
from flagsched.admin.api.deps import problems, service
from flagsched.admin.service.access import Actor
from flagsched.admin.service.core import AdminService
from flagsched.admin.service.notifications import NotificationFilter
from flagsched.admin.service.report_models import DeliveryStatus, NotificationPage

router = APIRouter(prefix="/api/admin", tags=["notifications"])
Svc = Annotated[AdminService, Depends(service)]
_NAME = r"^[A-Za-z0-9._:-]{1,200}$"


@router.get(
    "/notifications",
    response_model=NotificationPage,
    responses=problems(401, 403, 422),
    summary="Notification deliveries (one per event and sink), newest first",
)
def list_notifications(
    svc: Svc,
    status: Annotated[
        list[DeliveryStatus] | None, Query(description="repeatable: any of these")
    ] = None,
    sink: Annotated[str | None, Query(pattern=_NAME, description="a sink's name")] = None,
    rule: Annotated[str | None, Query(pattern=_NAME, description="a rule's name")] = None,
    kind: Annotated[
        str | None, Query(pattern=r"^[a-z_]{1,50}$", description="e.g. dead_lettered, resolve")
    ] = None,
    schedule_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    updated_after: AwareDatetime | None = None,
    updated_before: AwareDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
    _actor: Actor = Depends(require("notifications.read")),  # noqa: B008
) -> NotificationPage:
    f = NotificationFilter(
        status=list(status or []),
        sink=sink,
        rule=rule,
        kind=kind,
        schedule_id=schedule_id,
        updated_after=updated_after,
        updated_before=updated_before,
    )
    return svc.notifications(f, limit=limit, cursor=cursor)
