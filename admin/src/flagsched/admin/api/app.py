"""The FastAPI application: routers, problem documents, the request guard."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from flagsched.admin.api import problems
from flagsched.admin.api.auth import Authenticator
from flagsched.admin.api.middleware import RequestGuard
from flagsched.admin.api.routes import bulk, dead_letters, ops, policies, schedules
from flagsched.admin.service.core import AdminService
from flagsched.admin.settings import AdminSettings
from flagsched.admin.ui.app import mount as mount_ui

DESCRIPTION = """\
The operator surface of flagsched: create, inspect, edit, cancel, retry, preview and
redrive scheduled feature-flag changes. Times are RFC 3339 in UTC. Errors are
`application/problem+json` (RFC 9457) with a stable `type` (`urn:flagsched:problem:*`).
Every mutating call honours an `Idempotency-Key` header. Authentication: a bearer
token, static (`flagsched admin token create`) or an OIDC JWT; roles viewer, operator,
admin. See docs/admin-api.md.
"""


def create_app(
    service: AdminService | None,
    settings: AdminSettings,
    *,
    kafka_ready: Callable[[], bool] = lambda: False,
) -> FastAPI:
    """The app over ``service`` (None: only for its OpenAPI document); ``kafka_ready``
    answers the readiness probe's Kafka half."""
    app = FastAPI(
        title="flagsched admin API",
        version="1",
        description=DESCRIPTION,
        openapi_url="/api/admin/openapi.json",
        docs_url="/api/admin/docs",
        redoc_url=None,
    )
    app.state.service = service
    app.state.authenticator = Authenticator(settings)
    app.state.kafka_ready = kafka_ready
    problems.install(app)
    for module in (schedules, bulk, policies, dead_letters, ops):
        app.include_router(module.router)
    mount_ui(app, settings)  # the web UI under /ui (its routes are not in the OpenAPI document)
    app.add_middleware(RequestGuard, max_body_bytes=settings.admin_max_body_bytes)
    return app


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the API, from the same models as the code."""
    return create_app(None, AdminSettings()).openapi()


def render_openapi(doc: dict[str, Any]) -> str:
    """The document as checked in under docs/ (sorted keys, 2-space indent)."""
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
