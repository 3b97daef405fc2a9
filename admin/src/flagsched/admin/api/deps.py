"""Shared route pieces: the service, the path parameters, outcome -> response."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header, Path, Request
from fastapi.responses import JSONResponse

from flagsched.admin.api.problems import Problem
from flagsched.admin.service.core import AdminService
from flagsched.admin.service.mutation import Outcome

FLAG_KEY_PATTERN = r"^[A-Za-z0-9._:-]{1,200}$"

FlagKeyPath = Annotated[
    str, Path(alias="flagKey", pattern=FLAG_KEY_PATTERN, description="the flag's key")
]
ScheduleIdPath = Annotated[int, Path(alias="scheduleId", ge=1, le=2**63 - 1)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="the same key and request return the first response, with no second effect",
    ),
]


def service(request: Request) -> AdminService:
    """The app's service."""
    svc: AdminService = request.app.state.service
    return svc


def respond(outcome: Outcome) -> JSONResponse:
    """A mutating action's outcome as a response (a replay says so in a header)."""
    headers = {}
    if outcome.location:
        headers["Location"] = outcome.location
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(outcome.body, status_code=outcome.status, headers=headers)


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for problem documents."""
    return {code: {"model": Problem, "content": {"application/problem+json": {}}} for code in codes}
