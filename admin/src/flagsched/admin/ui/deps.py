"""The UI's request dependencies: who is logged in, may they see this page, may they
do this action (``Origin`` + CSRF token + role), and the submitted form.

A page declares ``ctx: Page = Depends(page("schedules.read"))``; an action declares
``ctx: Page = Depends(action("schedules.cancel"))``. Both answer with the HTML error
page (:class:`UiError`) or a redirect to the login, never with the API's JSON.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from flagsched.admin.api.auth import Authenticator
from flagsched.admin.service.access import Actor
from flagsched.admin.service.core import AdminService
from flagsched.admin.settings import AdminSettings
from flagsched.admin.ui import sessions
from flagsched.admin.ui.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    origin_allowed,
    token_matches,
)

Form = dict[str, list[str]]


class UiError(Exception):
    """An error the UI shows as its HTML error page with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class LoginRequired(Exception):
    """No live session: a page redirects to the login (htmx: ``HX-Redirect``)."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


@dataclass(frozen=True)
class Page:
    """What a UI route gets: the session's actor (on this request) and the form."""

    request: Request
    session: sessions.Session
    actor: Actor
    form: Form = field(default_factory=dict)

    @property
    def service(self) -> AdminService:
        """The admin service (the same the API uses)."""
        svc: AdminService = self.request.app.state.service
        return svc

    def one(self, name: str, default: str = "") -> str:
        """The first value of form field ``name``, stripped."""
        return (self.form.get(name) or [default])[0].strip()


def ui_settings(request: Request) -> AdminSettings:
    """The admin settings of the app."""
    s: AdminSettings = request.app.state.admin_settings
    return s


def find_session(request: Request) -> sessions.Session | None:
    """The live session of the request's cookie (also kept on ``request.state``)."""
    sid = request.cookies.get(sessions.COOKIE)
    if not sid:
        return None
    svc: AdminService = request.app.state.service
    with svc.connection() as conn:
        found = sessions.find(conn, sid)
        if found is not None and not _token_still_valid(request, found):
            sessions.delete(conn, sid)
            found = None
    request.state.ui_session = found
    return found


def _token_still_valid(request: Request, session: sessions.Session) -> bool:
    """A session opened with a static token lasts only while the token exists with the
    same role and prefixes (the file is re-read when it changes)."""
    if session.token_id is None:
        return True
    auth: Authenticator = request.app.state.authenticator
    record = auth.tokens.get(session.token_id)
    return (
        record is not None
        and record.role == session.actor.role
        and tuple(record.prefixes) == session.actor.prefixes
    )


def _on_request(request: Request, session: sessions.Session) -> Actor:
    client = request.client.host if request.client else None
    return session.actor.with_request(getattr(request.state, "request_id", None), None, client)


def page(needed: str) -> Callable[[Request], Page]:
    """A dependency for a GET page: a live session whose role allows ``needed``."""

    def dependency(request: Request) -> Page:
        session = find_session(request)
        if session is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise LoginRequired(target)
        if not session.actor.allowed(needed):
            raise UiError(403, f"role {session.actor.role} may not {needed}")
        return Page(request, session, _on_request(request, session))

    return dependency


async def read_form(request: Request) -> Form:
    """The ``application/x-www-form-urlencoded`` body (repeated fields kept in order)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}
    form: Form = {}
    body = (await request.body()).decode("utf-8", "replace")
    for name, value in parse_qsl(body, keep_blank_values=True):
        form.setdefault(name, []).append(value)
    return form


def first(form: Form, name: str) -> str | None:
    """The first value of field ``name`` (None: not sent)."""
    values = form.get(name)
    return values[0] if values else None


def check_origin(request: Request) -> None:
    """Refuse (403) an unsafe request whose ``Origin`` is not the UI's own."""
    if not origin_allowed(request, ui_settings(request)):
        raise UiError(403, "this request did not come from the admin UI (Origin check)")


def action(needed: str) -> Callable[[Request], Awaitable[Page]]:
    """A dependency for a POST: the ``Origin`` check, a live session, its CSRF token
    (form field ``csrf_token`` or header ``X-CSRF-Token``), then the role for ``needed``."""

    async def dependency(request: Request) -> Page:
        check_origin(request)
        form = await read_form(request)
        session = await run_in_threadpool(find_session, request)  # a database query
        if session is None:
            raise UiError(403, "no session: log in again")
        given = request.headers.get(CSRF_HEADER) or first(form, CSRF_FIELD)
        if not token_matches(session.csrf_token, given):
            raise UiError(403, "the form's CSRF token is missing or stale: reload the page")
        if not session.actor.allowed(needed):
            raise UiError(403, f"role {session.actor.role} may not {needed}")
        return Page(request, session, _on_request(request, session), form)

    return dependency


def login_url(next_url: str) -> str:
    """The login page, returning to ``next_url`` afterwards."""
    return "/ui/login?next=" + quote(next_url, safe="/")


def safe_next(value: str | None) -> str:
    """Only a path of this UI may be a post-login target (no open redirect)."""
    if value and value.startswith("/ui") and not value.startswith("//") and "\\" not in value:
        return value
    return "/ui/"
