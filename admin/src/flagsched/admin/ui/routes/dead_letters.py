"""``/ui/dead-letters``: dead schedules by filter (kept in the URL), their redrive in
two steps (the dry run's count and sample, then the confirmed job), its progress at
``/ui/redrives/{id}`` (polled until done), and the poison records of the dead-letter
topic, their bytes escaped, loaded on their own (``/ui/dead-letters/poison``) so a
slow broker never delays the page.

Every step calls the service methods the API calls (``redrive_plan``, ``redrive``,
``get_redrive``, ``poison``): the cap, the rate and the audit row are theirs.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from flagsched.admin.service.errors import AdminError
from flagsched.admin.service.models import DeadLetterFilter, RedriveRequest
from flagsched.admin.ui.deps import Page, action, page
from flagsched.admin.ui.invalid import describe
from flagsched.admin.ui.render import render

router = APIRouter(prefix="/ui", include_in_schema=False)

#: The filter's fields, in the order the form shows them.
FIELDS = ("flag_key", "flag_prefix", "error_class", "reason", "dead_after", "dead_before")
PAGE_SIZE = 50
#: Poison records are looked for among the last this many records of each partition.
POISON_LAST = 1000


def read_filter(values: dict[str, str]) -> tuple[DeadLetterFilter | None, str]:
    """The filter the form's ``values`` ask for, or None and why not."""
    given = {k: v for k, v in values.items() if k in FIELDS and v}
    try:
        return DeadLetterFilter.model_validate(given), ""
    except ValidationError as exc:
        return None, describe(exc)


def _values(ctx: Page, source: dict[str, list[str]] | None = None) -> dict[str, str]:
    if source is None:
        return {name: ctx.request.query_params.get(name, "").strip() for name in FIELDS}
    return {name: (source.get(name) or [""])[0].strip() for name in FIELDS}


def _query(values: dict[str, str], **extra: str) -> str:
    return urlencode({k: v for k, v in (values | extra).items() if v})


@router.get("/dead-letters")
def dead_letters_page(
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
    ctx: Page = Depends(page("dead_letters.read")),  # noqa: B008
) -> HTMLResponse:
    values = _values(ctx)
    f, error = read_filter(values)
    items, next_cursor = [], None
    if f is not None:
        try:
            found = ctx.service.dead_letters(ctx.actor, f, limit=PAGE_SIZE, cursor=cursor)
            items, next_cursor = found.items, found.next_cursor
        except AdminError as exc:
            error = exc.detail
    return render(
        ctx.request,
        "dead_letters.html",
        {
            "title": "Dead letters",
            "nav": "/ui/dead-letters",
            "v": values,
            "error": error,
            "items": items,
            "next_url": (
                f"/ui/dead-letters?{_query(values, cursor=next_cursor)}" if next_cursor else ""
            ),
            "query": _query(values),
            "filtered": any(values.values()),
        },
        status=422 if error else 200,
    )


@router.get("/dead-letters/poison")
def poison_fragment(ctx: Page = Depends(page("dead_letters.read"))) -> HTMLResponse:  # noqa: B008
    try:
        records, error = ctx.service.poison(last=POISON_LAST).items, ""
    except Exception as exc:  # a broker problem is shown in the fragment, not a 500 page
        records, error = [], f"Could not read the dead-letter topic: {type(exc).__name__}"
    return render(
        ctx.request, "_poison.html", {"records": records, "error": error, "last": POISON_LAST}
    )


def _request(values: dict[str, str], limit: str, rate: str, *, dry_run: bool) -> RedriveRequest:
    f, error = read_filter(values)
    if f is None:
        raise ValueError(error)
    body: dict[str, Any] = {"filter": f, "dry_run": dry_run}
    if limit:
        body["limit"] = limit
    if rate:
        body["rate_per_s"] = rate
    return RedriveRequest.model_validate(body)


@router.get("/dead-letters/redrive")
def redrive_dry_run(
    limit: Annotated[str, Query(max_length=20)] = "",
    rate_per_s: Annotated[str, Query(max_length=20)] = "",
    ctx: Page = Depends(page("dead_letters.redrive")),  # noqa: B008
) -> HTMLResponse:
    values = _values(ctx)
    context: dict[str, Any] = {
        "title": "Redrive dead letters: dry run",
        "nav": "/ui/dead-letters",
        "v": values,
        "limit": limit,
        "rate_per_s": rate_per_s,
        "query": _query(values),
        "key": secrets.token_urlsafe(16),
        "default_rate": ctx.service.env.admin.admin_redrive_rate_per_s,
        "cap": ctx.service.env.admin.admin_redrive_max,
        "plan": None,
        "error": "",
    }
    try:
        req = _request(values, limit, rate_per_s, dry_run=True)
        context["plan"] = ctx.service.redrive_plan(ctx.actor, req)
    except (ValueError, ValidationError) as exc:
        context["error"] = describe(exc)
    except AdminError as exc:
        context["error"] = exc.detail
    return render(
        ctx.request, "redrive_confirm.html", context, status=422 if context["error"] else 200
    )


@router.post("/dead-letters/redrive")
def redrive_start(ctx: Page = Depends(action("dead_letters.redrive"))) -> Response:  # noqa: B008
    values = _values(ctx, ctx.form)
    back = f"/ui/dead-letters/redrive?{_query(values)}"
    try:
        req = _request(values, ctx.one("limit"), ctx.one("rate_per_s"), dry_run=False)
        actor = replace(ctx.actor, idempotency_key=ctx.one("idempotency_key") or None)
        outcome = ctx.service.redrive(actor, req)
    except (ValueError, ValidationError) as exc:
        return _refused(ctx, back, describe(exc), 422)
    except AdminError as exc:
        return _refused(ctx, back, exc.detail, exc.status)
    return RedirectResponse(f"/ui/redrives/{outcome.body['id']}", status_code=303)


def _refused(ctx: Page, back: str, message: str, status: int) -> HTMLResponse:
    return render(
        ctx.request,
        "error.html",
        {"title": "Redrive refused", "status": status, "message": message, "back": back},
        status=status,
    )


RedriveId = Annotated[int, Path(alias="redriveId", ge=1, le=2**63 - 1)]


@router.get("/redrives/{redriveId}")
def redrive_page(
    redrive_id: RedriveId,
    ctx: Page = Depends(page("redrives.read")),  # noqa: B008
) -> HTMLResponse:
    job = ctx.service.get_redrive(redrive_id)
    return render(
        ctx.request,
        "redrive.html",
        {"title": f"Redrive {redrive_id}", "nav": "/ui/dead-letters", "job": job},
    )


@router.get("/redrives/{redriveId}/progress")
def redrive_progress(
    redrive_id: RedriveId,
    ctx: Page = Depends(page("redrives.read")),  # noqa: B008
) -> HTMLResponse:
    job = ctx.service.get_redrive(redrive_id)
    return render(ctx.request, "_redrive_progress.html", {"job": job})
