"""``/ui/login``: with an API token (a form), or with OIDC (code + PKCE) when
configured; ``/ui/logout``. The session cookie is ``HttpOnly; Secure; SameSite=Strict``."""

from __future__ import annotations

import logging
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from flagsched.admin.api.auth import Authenticator
from flagsched.admin.service.access import Actor
from flagsched.admin.service.core import AdminService
from flagsched.admin.ui import oidc, sessions
from flagsched.admin.ui.deps import (
    Page,
    UiError,
    action,
    check_origin,
    find_session,
    first,
    read_form,
    safe_next,
    ui_settings,
)
from flagsched.admin.ui.render import render
from flagsched.admin.ui.security import CSRF_FIELD, token_matches

log = logging.getLogger(__name__)
router = APIRouter(prefix="/ui", include_in_schema=False)
#: The login form's own CSRF token (double submit: this cookie and a hidden field).
LOGIN_COOKIE = "__Host-flagsched_login"


def _service(request: Request) -> AdminService:
    svc: AdminService = request.app.state.service
    return svc


def set_session_cookie(response: Response, sid: str, ttl_s: float) -> None:
    """The session cookie: HttpOnly; Secure; SameSite=Strict; Path=/ (``__Host-``)."""
    response.set_cookie(
        sessions.COOKIE,
        sid,
        max_age=int(ttl_s),
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )


def _login_page(request: Request, *, next_url: str, error: str = "", status: int = 200) -> Response:
    token = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        {
            "title": "Log in",
            "login_csrf": token,
            "next": next_url,
            "error": error,
            "oidc": ui_settings(request).ui_oidc_enabled(),
        },
        status=status,
    )
    response.set_cookie(
        LOGIN_COOKIE, token, max_age=3600, path="/", secure=True, httponly=True, samesite="strict"
    )
    return response


def _start_session(request: Request, actor: Actor, next_url: str, token_id: str | None) -> Response:
    settings = ui_settings(request)
    with _service(request).connection() as conn:
        sid, _ = sessions.create(conn, actor, settings.admin_ui_session_ttl_s, token_id=token_id)
    log.info("ui login of %s role=%s request=%s", actor.name, actor.role, request.state.request_id)
    response = RedirectResponse(safe_next(next_url), status_code=303)
    set_session_cookie(response, sid, settings.admin_ui_session_ttl_s)
    response.delete_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


@router.get("/login")
def login_form(request: Request, next: Annotated[str, Query(max_length=2000)] = "/ui/") -> Response:
    if find_session(request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _login_page(request, next_url=safe_next(next))


@router.post("/login")
async def login_with_token(request: Request) -> Response:
    check_origin(request)
    form = await read_form(request)
    next_url = safe_next(first(form, "next"))
    cookie = request.cookies.get(LOGIN_COOKIE)
    if cookie is None or not token_matches(cookie, first(form, CSRF_FIELD)):
        raise UiError(403, "the login form's CSRF token is missing or stale: reload the page")
    token = (first(form, "token") or "").strip()
    auth: Authenticator = request.app.state.authenticator
    # The token file and the session table are blocking I/O: off the event loop.
    actor = await run_in_threadpool(auth.actor, token) if token else None
    if actor is None:
        return _login_page(request, next_url=next_url, error="That token is not valid.", status=401)
    record = await run_in_threadpool(auth.tokens.verify, token)  # None: an OIDC JWT
    token_id = record.id if record is not None else None
    return await run_in_threadpool(_start_session, request, actor, next_url, token_id)


@router.get("/login/oidc")
def login_with_oidc(request: Request) -> Response:
    settings = ui_settings(request)
    if not settings.ui_oidc_enabled():
        raise UiError(404, "OIDC login is not configured")
    with _service(request).connection() as conn:
        begun = oidc.begin(conn, settings)
    response = RedirectResponse(begun.authorize_url, status_code=302)
    response.set_cookie(
        oidc.BINDING_COOKIE,
        begun.binding,
        max_age=oidc.LOGIN_TTL_S,
        path="/",
        secure=True,
        httponly=True,
        samesite="lax",
    )
    return response


@router.get("/login/callback")
def oidc_callback(
    request: Request,
    code: Annotated[str, Query(min_length=1, max_length=4000)],
    state: Annotated[str, Query(min_length=1, max_length=200)],
) -> Response:
    settings = ui_settings(request)
    auth: Authenticator = request.app.state.authenticator
    if auth.id_tokens is None:
        raise UiError(404, "OIDC login is not configured")
    try:
        with _service(request).connection() as conn:
            actor = oidc.finish(
                conn,
                settings,
                auth.id_tokens,
                code=code,
                state=state,
                binding=request.cookies.get(oidc.BINDING_COOKIE),
            )
            sid, _ = sessions.create(conn, actor, settings.admin_ui_session_ttl_s)
    except oidc.LoginFailed as exc:
        log.info("oidc login refused: %s request=%s", exc, request.state.request_id)
        raise UiError(401, f"OIDC login failed: {exc}") from exc
    # The provider's redirect is a cross-site navigation, on which a SameSite=Strict
    # cookie is not sent: continue with a same-site navigation from this page instead.
    response = render(request, "logged_in.html", {"title": "Logged in", "next": "/ui/"})
    set_session_cookie(response, sid, settings.admin_ui_session_ttl_s)
    response.delete_cookie(
        oidc.BINDING_COOKIE, path="/", secure=True, httponly=True, samesite="lax"
    )
    return response


@router.post("/logout")
def logout(request: Request, ctx: Page = Depends(action("schedules.read"))) -> Response:  # noqa: B008
    sid = request.cookies.get(sessions.COOKIE)
    if sid:
        with ctx.service.connection() as conn:
            sessions.delete(conn, sid)
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(sessions.COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response
