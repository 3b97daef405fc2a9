"""``/api/admin/retry-policies``: preview a policy's retry timeline."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from flagsched.admin.api.auth import require
from flagsched.admin.api.deps import problems, service
from flagsched.admin.service.access import Actor
from flagsched.admin.service.core import AdminService
from flagsched.admin.service.models import PolicyPreviewRequest, Preview

router = APIRouter(prefix="/api/admin/retry-policies", tags=["retry policies"])


@router.post(
    "/preview",
    response_model=Preview,
    responses=problems(401, 403, 413, 422),
    summary="The attempts, delays and tier hops of a policy after a failure",
)
def preview_policy(
    body: PolicyPreviewRequest,
    svc: Annotated[AdminService, Depends(service)],
    _actor: Actor = Depends(require("schedules.preview")),  # noqa: B008
) -> Preview:
    return svc.preview_policy(body)
