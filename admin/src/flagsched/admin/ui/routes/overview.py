"""``/ui/``: the overview. The breaker is read from Kafka, so it loads on its own
(``/ui/overview/breaker``, an htmx fragment) and a slow broker never delays the page."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse

from flagsched.admin.ui.chart import per_minute_chart
from flagsched.admin.ui.deps import Page, page
from flagsched.admin.ui.render import render

router = APIRouter(prefix="/ui", include_in_schema=False)


@router.get("/")
def overview(ctx: Page = Depends(page("stats.read"))) -> HTMLResponse:  # noqa: B008
    data = ctx.service.overview(ctx.actor)
    return render(
        ctx.request,
        "overview.html",
        {
            "title": "Overview",
            "nav": "/ui/",
            "o": data,
            "chart": per_minute_chart(data.minutes),
            "applied_total": sum(m.applied for m in data.minutes),
            "failed_total": sum(m.failed for m in data.minutes),
        },
    )


@router.get("/overview/breaker")
def breaker(ctx: Page = Depends(page("stats.read"))) -> HTMLResponse:  # noqa: B008
    return render(ctx.request, "_breaker.html", {"b": ctx.service.breaker()})
