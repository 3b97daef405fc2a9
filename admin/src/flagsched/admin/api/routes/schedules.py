"""``/api/admin/.../schedules``: create, list, show, edit, cancel, retry, preview."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime

from flagsched.admin.api.auth import require
from flagsched.admin.api.deps import (
    FLAG_KEY_PATTERN,
    FlagKeyPath,
    IdempotencyKey,
    ScheduleIdPath,
    problems,
    respond,
    service,
)
from flagsched.admin.service.access import Actor
from flagsched.admin.service.core import AdminService
from flagsched.admin.service.models import (
    Cancelled,
    Created,
    Page,
    Preview,
    Retried,
    Schedule,
    ScheduleCreate,
    ScheduleDetail,
    ScheduleEdit,
    Status,
)
from flagsched.admin.service.schedules_read import ScheduleFilter, Sort
from flagsched.schemas.events import Priority

router = APIRouter(prefix="/api/admin", tags=["schedules"])
Svc = Annotated[AdminService, Depends(service)]
_ONE = "/flags/{flagKey}/schedules/{scheduleId}"
_AUTH = problems(401, 403)


def _filter_params(
    status: Annotated[list[Status] | None, Query(description="repeatable")] = None,
    flag_prefix: Annotated[str | None, Query(max_length=200, pattern=r"^[A-Za-z0-9._:-]*$")] = None,
    priority: Priority | None = None,
    error_class: Annotated[str | None, Query(max_length=100)] = None,
    due_after: AwareDatetime | None = None,
    due_before: AwareDatetime | None = None,
    finished_after: AwareDatetime | None = None,
    finished_before: AwareDatetime | None = None,
) -> ScheduleFilter:
    return ScheduleFilter(
        status=list(status or []),
        flag_prefix=flag_prefix,
        priority=priority.value if priority else None,
        error_class=error_class,
        due_after=due_after,
        due_before=due_before,
        finished_after=finished_after,
        finished_before=finished_before,
    )


Filter = Annotated[ScheduleFilter, Depends(_filter_params)]
Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[str | None, Query(max_length=1000)]


@router.post(
    "/flags/{flagKey}/schedules",
    status_code=201,
    response_model=Created,
    responses=problems(401, 403, 404, 413, 422),
    summary="Create a schedule (a past time means now; conflicts are listed)",
)
def create_schedule(
    flag_key: FlagKeyPath,
    body: ScheduleCreate,
    svc: Svc,
    _key: IdempotencyKey = None,
    actor: Actor = Depends(require("schedules.create")),  # noqa: B008
) -> JSONResponse:
    return respond(svc.create(actor, flag_key, body))


@router.get(
    "/schedules", response_model=Page, responses=problems(401, 403, 422), summary="List schedules"
)
def list_schedules(
    svc: Svc,
    f: Filter,
    flag_key: Annotated[str | None, Query(pattern=FLAG_KEY_PATTERN)] = None,
    sort: Sort = "scheduled_at",
    limit: Limit = 50,
    cursor: Cursor = None,
    actor: Actor = Depends(require("schedules.read")),  # noqa: B008
) -> Page:
    f = ScheduleFilter(**{**f.__dict__, "flag_key": flag_key})
    return svc.list(actor, f, sort=sort, limit=limit, cursor=cursor)


@router.get(
    "/flags/{flagKey}/schedules",
    response_model=Page,
    responses=problems(401, 403, 422),
    summary="List the schedules of one flag",
)
def list_flag_schedules(
    flag_key: FlagKeyPath,
    svc: Svc,
    f: Filter,
    sort: Sort = "scheduled_at",
    limit: Limit = 50,
    cursor: Cursor = None,
    actor: Actor = Depends(require("schedules.read")),  # noqa: B008
) -> Page:
    actor.check_flag(flag_key)
    f = ScheduleFilter(**{**f.__dict__, "flag_key": flag_key})
    return svc.list(actor, f, sort=sort, limit=limit, cursor=cursor)


@router.get(
    _ONE,
    response_model=ScheduleDetail,
    responses=problems(401, 403, 404, 422),
    summary="A schedule, its attempts and its planned remaining attempts",
)
def show_schedule(
    flag_key: FlagKeyPath,
    schedule_id: ScheduleIdPath,
    svc: Svc,
    actor: Actor = Depends(require("schedules.read")),  # noqa: B008
) -> ScheduleDetail:
    return svc.show(actor, flag_key, schedule_id)


@router.patch(
    _ONE,
    response_model=Schedule,
    responses=problems(401, 403, 404, 409, 413, 422),
    summary="Edit a schedule not yet applied (moving its time re-arms it)",
)
def edit_schedule(
    flag_key: FlagKeyPath,
    schedule_id: ScheduleIdPath,
    body: ScheduleEdit,
    svc: Svc,
    _key: IdempotencyKey = None,
    actor: Actor = Depends(require("schedules.edit")),  # noqa: B008
) -> JSONResponse:
    return respond(svc.edit(actor, flag_key, schedule_id, body))


@router.post(
    _ONE + "/cancel",
    response_model=Cancelled,
    responses=problems(401, 403, 404, 409, 422),
    summary="Cancel a pending, dispatched or retrying schedule",
)
def cancel_schedule(
    flag_key: FlagKeyPath,
    schedule_id: ScheduleIdPath,
    svc: Svc,
    _key: IdempotencyKey = None,
    actor: Actor = Depends(require("schedules.cancel")),  # noqa: B008
) -> JSONResponse:
    return respond(svc.cancel(actor, flag_key, schedule_id))


@router.delete(
    _ONE,
    response_model=Cancelled,
    responses=problems(401, 403, 404, 409, 422),
    summary="Cancel a schedule (the same as POST .../cancel)",
)
def delete_schedule(
    flag_key: FlagKeyPath,
    schedule_id: ScheduleIdPath,
    svc: Svc,
    _key: IdempotencyKey = None,
    actor: Actor = Depends(require("schedules.cancel")),  # noqa: B008
) -> JSONResponse:
    return respond(svc.cancel(actor, flag_key, schedule_id))


@router.post(
    _ONE + "/retry",
    response_model=Retried,
    responses=problems(401, 403, 404, 409, 422),
    summary="Manual retry: a retrying schedule runs now; a dead one re-opens",
)
def retry_schedule(
    flag_key: FlagKeyPath,
    schedule_id: ScheduleIdPath,
    svc: Svc,
    _key: IdempotencyKey = None,
    actor: Actor = Depends(require("schedules.retry")),  # noqa: B008
) -> JSONResponse:
    return respond(svc.retry(actor, flag_key, schedule_id))


@router.get(
    _ONE + "/preview",
    response_model=Preview,
    responses=problems(401, 403, 404, 422),
    summary="The retry timeline of a schedule, as the worker will compute it",
)
def preview_schedule(
    flag_key: FlagKeyPath,
    schedule_id: ScheduleIdPath,
    svc: Svc,
    actor: Actor = Depends(require("schedules.preview")),  # noqa: B008
) -> Preview:
    return svc.preview(actor, flag_key, schedule_id)
