"""``/api/admin/schedules/bulk-actions`` and ``/api/admin/bulk-actions/{id}``: cancel or
retry every schedule matching a filter, with a dry run first and progress after."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse

from flagsched.admin.api.auth import require
from flagsched.admin.api.deps import IdempotencyKey, problems, respond, service
from flagsched.admin.service.access import Actor
from flagsched.admin.service.bulk_models import BulkAction, BulkActionRequest, BulkPlan
from flagsched.admin.service.core import AdminService

router = APIRouter(prefix="/api/admin", tags=["schedules"])
Svc = Annotated[AdminService, Depends(service)]


@router.post(
    "/schedules/bulk-actions",
    response_model=BulkPlan | BulkAction,
    responses={**problems(401, 403, 413, 422), 202: {"model": BulkAction}},
    summary="Cancel or retry ALL schedules matching a filter: a dry run by default; else a job",
)
def start_bulk_action(
    body: BulkActionRequest,
    svc: Svc,
    _key: IdempotencyKey = None,
    actor: Actor = Depends(require("schedules.bulk")),  # noqa: B008
) -> JSONResponse:
    return respond(svc.bulk_action(actor, body))


@router.get(
    "/bulk-actions/{bulkActionId}",
    response_model=BulkAction,
    responses=problems(401, 403, 404, 422),
    summary="A bulk action and its progress",
)
def show_bulk_action(
    bulk_id: Annotated[int, Path(alias="bulkActionId", ge=1, le=2**63 - 1)],
    svc: Svc,
    _actor: Actor = Depends(require("bulk_actions.read")),  # noqa: B008
) -> BulkAction:
    return svc.get_bulk_action(bulk_id)
