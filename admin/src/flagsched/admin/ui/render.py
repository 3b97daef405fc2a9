"""The one way a UI page is rendered: the Jinja2 environment (autoescape on, strict
undefined) and :func:`render`, which adds what every template may use."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from flagsched.admin.ui.security import CSRF_FIELD

#: The navigation bar: (label, path); a page marks itself with ``nav="<path>"``.
NAV: tuple[tuple[str, str], ...] = (
    ("Overview", "/ui/"),
    ("Schedules", "/ui/schedules"),
    ("Dead letters", "/ui/dead-letters"),
    ("Stats", "/ui/stats"),
)


def _time(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A time as UTC text (``-`` when absent)."""
    return "-" if value is None else value.astimezone(UTC).strftime(fmt) + " UTC"


def _duration(seconds: float | None) -> str:
    """A duration in the largest unit that keeps it readable: 850 ms, 12 s, 6 min, 3 h."""
    if seconds is None:
        return "-"
    s = abs(seconds)
    if s < 1:
        text = f"{s * 1000:.0f} ms"
    elif s < 120:
        text = f"{s:.3g} s"
    elif s < 7200:
        text = f"{s / 60:.3g} min"
    else:
        text = f"{s / 3600:.3g} h"
    return ("-" if seconds < 0 else "") + text


@cache
def environment() -> jinja2.Environment:
    """The templates of this package; every ``{{ }}`` is HTML-escaped."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("flagsched.admin.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["time"] = _time
    env.filters["duration"] = _duration
    env.globals["NAV"] = NAV
    env.globals["CSRF_FIELD"] = CSRF_FIELD
    return env


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """``template`` rendered with ``context`` plus ``request``, ``actor``, ``can(action)``
    and ``csrf_token`` of the request's session (set by the UI dependencies)."""
    session = getattr(request.state, "ui_session", None)
    actor = session.actor if session is not None else None
    values: dict[str, Any] = {
        "request": request,
        "actor": actor,
        "can": (lambda action: actor is not None and actor.allowed(action)),
        "csrf_token": session.csrf_token if session is not None else "",
        "nav": "",
        "title": "",
        "now": datetime.now(UTC),
    }
    values.update(context or {})
    html = environment().get_template(template).render(values)
    return HTMLResponse(html, status_code=status, headers=dict(headers or {}))
