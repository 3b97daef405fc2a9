"""``/ui/schedules/bulk`` (the count to confirm), ``/ui/bulk-actions`` (start) and
``/ui/bulk-actions/{id}`` (progress, polled by htmx until done)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from flagsched.admin.service.bulk import APPLIES_TO
from flagsched.admin.service.bulk_models import BulkActionRequest, BulkKind, BulkPlan
from flagsched.admin.ui import filters
from flagsched.admin.ui.deps import Page, UiError, action, page
from flagsched.admin.ui.render import render

router = APIRouter(prefix="/ui", include_in_schema=False)
BulkId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def _request(ctx: Page, *, dry_run: bool) -> BulkActionRequest:
    kind = ctx.one("action")
    if kind not in APPLIES_TO:
        raise UiError(422, "action: must be cancel or retry")
    sel, errors = filters.parse(ctx.form)
    if errors:
        raise UiError(422, "; ".join(f"{k}: {v}" for k, v in errors.items()))
    if not sel.narrows():
        raise UiError(
            422, "filter: give at least one filter: a bulk action never selects every schedule"
        )
    checked: BulkKind = "cancel" if kind == "cancel" else "retry"
    return BulkActionRequest(action=checked, filter=sel, dry_run=dry_run)


@router.post("/schedules/bulk")
def confirm(ctx: Page = Depends(action("schedules.bulk"))) -> HTMLResponse:  # noqa: B008
    req = _request(ctx, dry_run=True)
    plan = BulkPlan.model_validate(ctx.service.bulk_action(ctx.actor, req).body)
    return render(
        ctx.request,
        "bulk_confirm.html",
        {
            "title": f"Confirm bulk {req.action}",
            "nav": "/ui/schedules",
            "plan": plan,
            "applies_to": APPLIES_TO[req.action],
            "pairs": filters.as_pairs(req.filter),
            "query": filters.query(req.filter),
        },
    )


@router.post("/bulk-actions")
def start(ctx: Page = Depends(action("schedules.bulk"))) -> Response:  # noqa: B008
    outcome = ctx.service.bulk_action(ctx.actor, _request(ctx, dry_run=False))
    return RedirectResponse(f"/ui/bulk-actions/{outcome.body['id']}", status_code=303)


@router.get("/bulk-actions/{bulk_id}")
def progress_page(bulk_id: BulkId, ctx: Page = Depends(page("bulk_actions.read"))) -> HTMLResponse:  # noqa: B008
    job = ctx.service.get_bulk_action(bulk_id)
    return render(ctx.request, "bulk_progress.html", {"title": f"Bulk {job.action}", "job": job})


@router.get("/bulk-actions/{bulk_id}/progress")
def progress(bulk_id: BulkId, ctx: Page = Depends(page("bulk_actions.read"))) -> HTMLResponse:  # noqa: B008
    return render(ctx.request, "_bulk_progress.html", {"job": ctx.service.get_bulk_action(bulk_id)})
