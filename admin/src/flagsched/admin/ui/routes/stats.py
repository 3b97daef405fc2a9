"""``/ui/stats``: success rate by attempt number with the max_retries suggestion, and
failures by error class and message fingerprint (flagsched.admin.stats, the same
report as ``flagsched stats`` and ``GET /api/admin/stats``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse

from flagsched.admin.ui.deps import Page, page
from flagsched.admin.ui.render import render

router = APIRouter(prefix="/ui", include_in_schema=False)
#: The windows the page offers, in minutes.
WINDOWS = (15, 60, 360, 1440, 10080)


@router.get("/stats")
def stats_page(
    since_minutes: Annotated[int, Query(ge=1, le=60 * 24 * 90)] = 60,
    ctx: Page = Depends(page("stats.read")),  # noqa: B008
) -> HTMLResponse:
    until = datetime.now(UTC)
    report = ctx.service.stats_report(until - timedelta(minutes=since_minutes), until)
    return render(
        ctx.request,
        "stats.html",
        {
            "title": "Stats",
            "nav": "/ui/stats",
            "st": report,
            "shares": {a.attempt: a for a in report.applied_by_attempt},
            "since_minutes": since_minutes,
            "windows": WINDOWS,
        },
    )
