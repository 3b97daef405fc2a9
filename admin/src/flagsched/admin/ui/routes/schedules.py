"""``/ui/schedules``: the schedule list, its filters kept in the URL (a GET form), and
pages through the API's own cursor."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse

from flagsched.admin.service.errors import InvalidInput
from flagsched.admin.service.models import Page as SchedulePage
from flagsched.admin.service.overview import STATUSES
from flagsched.admin.ui import filters
from flagsched.admin.ui.deps import Page, page
from flagsched.admin.ui.render import render
from flagsched.schemas.events import Priority

router = APIRouter(prefix="/ui", include_in_schema=False)
PAGE_SIZE = 50


@router.get("/schedules")
def schedules(
    ctx: Page = Depends(page("schedules.read")),  # noqa: B008
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> HTMLResponse:
    query = ctx.request.query_params
    sel, errors = filters.parse({k: query.getlist(k) for k in filters.FIELDS})
    result = SchedulePage(items=[], next_cursor=None)
    if not errors:
        try:
            result = ctx.service.list(
                ctx.actor,
                filters.to_filter(sel),
                sort="scheduled_at",
                limit=PAGE_SIZE,
                cursor=cursor,
            )
        except InvalidInput as exc:
            errors = {exc.field: exc.detail}
    return render(
        ctx.request,
        "schedules.html",
        {
            "title": "Schedules",
            "nav": "/ui/schedules",
            "sel": sel,
            "errors": errors,
            "page": result,
            "statuses": [(s, s) for s in STATUSES],
            "priorities": [(p.value, p.value) for p in Priority],
            "value": lambda name: filters.form_value(sel, name),
            "pairs": filters.as_pairs(sel),
            "next_url": (
                "/ui/schedules?" + filters.query(sel, cursor=result.next_cursor)
                if result.next_cursor
                else None
            ),
            "first_url": "/ui/schedules?" + filters.query(sel) if cursor else None,
            "narrowed": sel.narrows(),
        },
    )
