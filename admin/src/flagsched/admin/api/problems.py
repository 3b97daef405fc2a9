"""Errors as ``application/problem+json`` (RFC 9457), each with a stable ``type``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from flagsched.admin.service.errors import AdminError

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
#: Every problem type is this prefix plus a slug; the slugs are listed in docs/admin-api.md.
TYPE_PREFIX = "urn:flagsched:problem:"


class FieldError(BaseModel):
    """One invalid field of a request."""

    field: str = Field(description="dotted path, e.g. retry_policy.base_s, or query.limit")
    message: str


class Problem(BaseModel):
    """A problem document (RFC 9457)."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    errors: list[FieldError] | None = None


def problem(
    request: Request, status: int, slug: str, title: str, detail: str | None, **extra: Any
) -> JSONResponse:
    """A problem+json response for ``request``."""
    body = Problem(
        type=TYPE_PREFIX + slug,
        title=title,
        status=status,
        detail=detail,
        instance=request.url.path,
        request_id=getattr(request.state, "request_id", None),
        errors=extra.get("errors"),
    )
    headers = extra.get("headers") or {}
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]  # body fields are named as the client wrote them
    return ".".join(parts) or "body"


_HTTP_SLUGS = {
    401: ("unauthenticated", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("too-large", "Request body too large"),
    503: ("unavailable", "Service unavailable"),
}


def install(app: FastAPI) -> None:
    """Map every error the app can raise to a problem document."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [FieldError(field=_field(e["loc"]), message=e["msg"]) for e in exc.errors()]
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
        return problem(request, 422, "validation", "Invalid request", detail, errors=errors)

    @app.exception_handler(AdminError)
    async def _admin(request: Request, exc: AdminError) -> JSONResponse:
        errors = exc.extra.get("errors")
        return problem(
            request,
            exc.status,
            exc.slug,
            exc.title,
            exc.detail,
            errors=[FieldError(**e) for e in errors] if errors else None,
        )

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        slug, title = _HTTP_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
        return problem(request, exc.status_code, slug, title, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception(
            "request_id=%s %s failed", getattr(request.state, "request_id", None), request.url.path
        )
        return problem(request, 500, "internal", "Internal error", "see the server log")
