"""Stats, the audit trail, and the health probes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from flagsched.admin.api.auth import require
from flagsched.admin.api.deps import problems, service
from flagsched.admin.api.problems import problem
from flagsched.admin.service.access import Actor
from flagsched.admin.service.core import AdminService
from flagsched.admin.service.models import AuditPage

router = APIRouter(tags=["operations"])
Svc = Annotated[AdminService, Depends(service)]


@router.get(
    "/api/admin/stats",
    responses=problems(401, 403, 422),
    summary="Failures by class and message, success by attempt, the backlog",
)
def stats(
    svc: Svc,
    since_minutes: Annotated[float, Query(gt=0, le=60 * 24 * 90)] = 60.0,
    _actor: Actor = Depends(require("stats.read")),  # noqa: B008
) -> dict[str, Any]:
    until = datetime.now(UTC)
    return svc.stats(until - timedelta(minutes=since_minutes), until)


@router.get(
    "/api/admin/audit",
    response_model=AuditPage,
    responses=problems(401, 403, 422),
    summary="The audit trail, newest first (read-only)",
)
def audit(
    svc: Svc,
    object_id: Annotated[str | None, Query(max_length=100)] = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
    actor_name: Annotated[str | None, Query(alias="actor", max_length=300)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
    _actor: Actor = Depends(require("audit.read")),  # noqa: B008
) -> AuditPage:
    return svc.audit(
        object_id=object_id, action=action, actor=actor_name, limit=limit, cursor=cursor
    )


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses=problems(503), summary="PostgreSQL and Kafka are reachable")
def readyz(request: Request, svc: Svc) -> Any:
    kafka = request.app.state.kafka_ready()
    database = svc.database_ready()
    if database and kafka:
        return {"status": "ready", "database": True, "kafka": True}
    down = [name for name, ok in (("database", database), ("kafka", kafka)) if not ok]
    response: JSONResponse = problem(
        request, 503, "unavailable", "Not ready", "unreachable: " + ", ".join(down)
    )
    return response
