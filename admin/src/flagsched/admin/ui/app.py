"""Mounting the UI on the admin app: its routers, its static files, its headers and
its error pages (HTML under ``/ui``; the API keeps its problem documents)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from flagsched.admin.service.errors import AdminError
from flagsched.admin.settings import AdminSettings
from flagsched.admin.ui.deps import LoginRequired, UiError, login_url
from flagsched.admin.ui.render import render
from flagsched.admin.ui.routes import (
    bulk,
    dead_letters,
    login,
    overview,
    schedule,
    schedules,
    stats,
)
from flagsched.admin.ui.security import UiHeaders

PREFIX = "/ui"
#: Every router of the UI; a new page adds its module here (README.md).
ROUTERS = (login, overview, schedules, bulk, schedule, dead_letters, stats)
Handler = Callable[[Request, Any], Awaitable[Response]]


def is_ui(request: Request) -> bool:
    """Whether ``request`` is for the UI (and so gets HTML, not problem+json)."""
    return request.url.path == PREFIX or request.url.path.startswith(PREFIX + "/")


def error_page(request: Request, status: int, message: str) -> Response:
    """The UI's error page (htmx requests get the message as a fragment)."""
    if request.headers.get("hx-request"):
        return render(request, "_error.html", {"status": status, "message": message}, status=status)
    return render(
        request,
        "error.html",
        {"status": status, "message": message, "title": "Error"},
        status=status,
    )


def _html_for_ui(
    app: FastAPI, kind: type[Exception], status: Callable[[Any], int], message: Callable[[Any], str]
) -> None:
    """Route ``kind`` to the UI's error page under /ui, to the API's handler elsewhere."""
    api: Handler | None = app.exception_handlers.get(kind)  # type: ignore[assignment]

    async def handler(request: Request, exc: Any) -> Response:
        if is_ui(request) or api is None:
            return error_page(request, status(exc), message(exc))
        return await api(request, exc)

    app.add_exception_handler(kind, handler)


def mount(app: FastAPI, settings: AdminSettings) -> None:
    """Serve the UI under /ui on ``app`` (call after the API's problem handlers)."""
    app.state.admin_settings = settings
    for module in ROUTERS:
        app.include_router(module.router)
    static = files("flagsched.admin.ui") / "static"
    app.mount(PREFIX + "/static", StaticFiles(directory=str(static)), name="ui-static")
    app.add_middleware(UiHeaders, prefix=PREFIX)

    @app.exception_handler(UiError)
    async def _ui_error(request: Request, exc: UiError) -> Response:
        return error_page(request, exc.status, exc.message)

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> Response:
        target = login_url(exc.next_url)
        if request.headers.get("hx-request"):  # htmx follows HX-Redirect, not a 303
            return Response(status_code=401, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)

    _html_for_ui(app, AdminError, lambda e: e.status, lambda e: e.detail)
    _html_for_ui(app, HTTPException, lambda e: e.status_code, lambda e: str(e.detail))
    _html_for_ui(
        app,
        RequestValidationError,
        lambda _: 422,
        lambda e: "; ".join(".".join(map(str, x["loc"])) + ": " + x["msg"] for x in e.errors()),
    )
