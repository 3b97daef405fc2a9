"""``/api/admin/dead-letters`` and ``/api/admin/redrives``."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime

from flagsched.admin.api.auth import require
from flagsched.admin.api.deps import FLAG_KEY_PATTERN, IdempotencyKey, problems, respond, service
from flagsched.admin.service.access import Actor
from flagsched.admin.service.core import AdminService
from flagsched.admin.service.models import (
    DeadLetterFilter,
    DeadLetterPage,
    PoisonPage,
    PoisonRepublish,
    Redrive,
    RedrivePlan,
    RedriveRequest,
    Republished,
)

router = APIRouter(prefix="/api/admin", tags=["dead letters"])
Svc = Annotated[AdminService, Depends(service)]


@router.get(
    "/dead-letters",
    response_model=DeadLetterPage,
    responses=problems(401, 403, 422),
    summary="Dead schedules with their last attempt, from the database",
)
def list_dead_letters(
    svc: Svc,
    flag_key: Annotated[str | None, Query(pattern=FLAG_KEY_PATTERN)] = None,
    flag_prefix: Annotated[str | None, Query(max_length=200, pattern=r"^[A-Za-z0-9._:-]*$")] = None,
    error_class: Annotated[str | None, Query(max_length=100)] = None,
    reason: Literal["exhausted", "permanent"] | None = None,
    dead_after: AwareDatetime | None = None,
    dead_before: AwareDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
    actor: Actor = Depends(require("dead_letters.read")),  # noqa: B008
) -> DeadLetterPage:
    f = DeadLetterFilter(
        flag_key=flag_key,
        flag_prefix=flag_prefix,
        error_class=error_class,
        reason=reason,
        dead_after=dead_after,
        dead_before=dead_before,
    )
    return svc.dead_letters(actor, f, limit=limit, cursor=cursor)


@router.get(
    "/dead-letters/poison",
    response_model=PoisonPage,
    responses=problems(401, 403, 422),
    summary="Poison records (no schedule row), read from the dead-letter topic",
)
def list_poison(
    svc: Svc,
    last: Annotated[int, Query(ge=1, le=10_000, description="records per partition")] = 1000,
    _actor: Actor = Depends(require("dead_letters.read")),  # noqa: B008
) -> PoisonPage:
    return svc.poison(last=last)


@router.post(
    "/dead-letters/poison/republish",
    response_model=Republished,
    responses=problems(401, 403, 404, 413, 422),
    summary="Republish one poison record to the topic it came from (admin, explicit)",
)
def republish_poison(
    body: PoisonRepublish,
    svc: Svc,
    _key: IdempotencyKey = None,
    actor: Actor = Depends(require("dead_letters.republish")),  # noqa: B008
) -> JSONResponse:
    return respond(svc.republish(actor, body))


@router.post(
    "/dead-letters/redrive",
    response_model=RedrivePlan | Redrive,
    responses={**problems(401, 403, 413, 422), 202: {"model": Redrive}},
    summary="Redrive dead schedules: a dry run by default; else a rate-limited job",
)
def redrive(
    body: RedriveRequest,
    svc: Svc,
    _key: IdempotencyKey = None,
    actor: Actor = Depends(require("dead_letters.redrive")),  # noqa: B008
) -> JSONResponse:
    return respond(svc.redrive(actor, body))


@router.get(
    "/redrives/{redriveId}",
    response_model=Redrive,
    responses=problems(401, 403, 404, 422),
    summary="A redrive job and its progress",
)
def show_redrive(
    redrive_id: Annotated[int, Path(alias="redriveId", ge=1, le=2**63 - 1)],
    svc: Svc,
    _actor: Actor = Depends(require("redrives.read")),  # noqa: B008
) -> Redrive:
    return svc.get_redrive(redrive_id)
