"""The UI's browser protections: its response headers (a CSP allowing only its own
scripts and styles, no framing) and the checks on every unsafe request (the
``Origin`` must be the UI's own; the CSRF token must be the session's)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request

from flagsched.admin.settings import AdminSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

#: Only the UI's own files; no inline script or style (SVG is drawn with attributes).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: The form field and the header (htmx) that carry the CSRF token.
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class UiHeaders:
    """Adds :data:`HEADERS` to every response under ``prefix`` (pages and static files)."""

    def __init__(self, app: ASGIApp, *, prefix: str = "/ui") -> None:
        self.app, self.prefix = app, prefix

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (
            path == self.prefix or path.startswith(self.prefix + "/")
        ):
            await self.app(scope, receive, send)
            return
        static = path.startswith(self.prefix + "/static/")

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = list(HEADERS)
                if not static:  # pages carry session data: never cached
                    extra.append((b"cache-control", b"no-store"))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, tagged)


def own_origin(request: Request) -> str:
    """The origin the request was addressed to (scheme, host and port as the browser
    wrote them in ``Host``)."""
    host = request.headers.get("host", "")
    return f"{request.url.scheme}://{host}".lower()


def origin_allowed(request: Request, settings: AdminSettings) -> bool:
    """Whether an unsafe request comes from the UI's own pages: its ``Origin`` (or, when
    a browser sent none, its ``Referer``) is the configured origin or the request's own."""
    given = request.headers.get("origin")
    if given is None or given == "null":
        referer = request.headers.get("referer")
        if not referer:
            return False
        parts = urlsplit(referer)
        given = f"{parts.scheme}://{parts.netloc}"
    allowed = {o.rstrip("/").lower() for o in settings.admin_ui_origins} or {own_origin(request)}
    return given.rstrip("/").lower() in allowed


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison of CSRF tokens."""
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())
