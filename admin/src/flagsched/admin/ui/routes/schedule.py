"""``/ui/flags/{flagKey}/schedules/{scheduleId}``: one schedule, its retry timeline
(SVG, :mod:`flagsched.admin.timeline`), its attempts and its plan; the live part
reloads itself (htmx polling of ``.../live``) until the schedule is terminal.

Retry now, cancel and edit each show a confirm step first (a page of its own, so it
works without script), then call the same service method as the API (one home per
action, audited there). The confirm form carries an Idempotency-Key, so a double
submit acts once.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from flagsched.admin.api.deps import FLAG_KEY_PATTERN
from flagsched.admin.service.errors import AdminError
from flagsched.admin.service.models import LIVE, ScheduleDetail, ScheduleEdit
from flagsched.admin.timeline import build_timeline, tier_path
from flagsched.admin.ui.deps import Page, action, page
from flagsched.admin.ui.invalid import describe
from flagsched.admin.ui.render import render

router = APIRouter(prefix="/ui", include_in_schema=False)

FlagKey = Annotated[str, Path(alias="flagKey", pattern=FLAG_KEY_PATTERN)]
ScheduleId = Annotated[int, Path(alias="scheduleId", ge=1, le=2**63 - 1)]
_ONE = "/flags/{flagKey}/schedules/{scheduleId}"
#: How often the live part reloads while the schedule can still change.
POLL_S = 1
#: What the confirm step says each action will do.
CONFIRM = {
    "retry": (
        "Retry now",
        "The next attempt runs now. A dead schedule is re-opened with one more attempt in"
        " its budget, so the manual attempt does not count against max_retries.",
    ),
    "cancel": (
        "Cancel the schedule",
        "The schedule will never change the flag. A retry already waiting is dropped and"
        " one cancelled event is published.",
    ),
}
Verb = Literal["retry", "cancel"]


def detail_url(flag_key: str, schedule_id: int) -> str:
    """The page of a schedule."""
    return f"/ui/flags/{flag_key}/schedules/{schedule_id}"


def live_context(detail: ScheduleDetail) -> dict[str, Any]:
    """What the live part of the page shows: the timeline and whether to keep polling."""
    s = detail.schedule
    now = datetime.now(UTC)
    return {
        "d": detail,
        "s": s,
        "timeline": build_timeline(detail.attempts, detail.plan, now, scheduled_at=s.scheduled_at),
        "live": s.status in LIVE,
        "poll_s": POLL_S,
        "url": detail_url(s.flag_key, s.id),
        "can_retry": s.status in ("retrying", "dead"),
        "can_cancel": s.status in LIVE,
        "can_edit": s.status in LIVE,
        "tier_path": tier_path,
    }


@router.get(_ONE)
def schedule_page(
    flag_key: FlagKey,
    schedule_id: ScheduleId,
    done: str = "",
    ctx: Page = Depends(page("schedules.read")),  # noqa: B008
) -> HTMLResponse:
    detail = ctx.service.show(ctx.actor, flag_key, schedule_id)
    context = live_context(detail) | {
        "title": f"Schedule {schedule_id}",
        "nav": "/ui/schedules",
        "done": done if done in ("retry", "cancel", "edit") else "",
    }
    return render(ctx.request, "schedule.html", context)


@router.get(_ONE + "/live")
def schedule_live(
    flag_key: FlagKey,
    schedule_id: ScheduleId,
    ctx: Page = Depends(page("schedules.read")),  # noqa: B008
) -> HTMLResponse:
    detail = ctx.service.show(ctx.actor, flag_key, schedule_id)
    return render(ctx.request, "_schedule_live.html", live_context(detail))


@router.get(_ONE + "/confirm/{verb}")
def confirm_page(
    flag_key: FlagKey,
    schedule_id: ScheduleId,
    verb: Verb,
    ctx: Page = Depends(page("schedules.read")),  # noqa: B008
) -> HTMLResponse:
    detail = ctx.service.show(ctx.actor, flag_key, schedule_id)
    label, what = CONFIRM[verb]
    return render(
        ctx.request,
        "schedule_confirm.html",
        {
            "title": f"{label}? Schedule {schedule_id}",
            "nav": "/ui/schedules",
            "s": detail.schedule,
            "verb": verb,
            "needed": f"schedules.{verb}",
            "label": label,
            "what": what,
            "url": detail_url(flag_key, schedule_id),
            "key": secrets.token_urlsafe(16),
        },
    )


def _act(ctx: Page, verb: Verb, flag_key: str, schedule_id: int) -> Response:
    actor = replace(ctx.actor, idempotency_key=ctx.one("idempotency_key") or None)
    url = detail_url(flag_key, schedule_id)
    try:
        if verb == "cancel":
            ctx.service.cancel(actor, flag_key, schedule_id)
        else:
            ctx.service.retry(actor, flag_key, schedule_id)
    except AdminError as exc:
        detail = ctx.service.show(ctx.actor, flag_key, schedule_id)
        return render(
            ctx.request,
            "schedule.html",
            live_context(detail)
            | {"title": f"Schedule {schedule_id}", "nav": "/ui/schedules", "done": ""}
            | {"error": f"{CONFIRM[verb][0]} failed: {exc.detail}"},
            status=exc.status,
        )
    return RedirectResponse(f"{url}?done={verb}", status_code=303)


@router.post(_ONE + "/cancel")
def cancel(
    flag_key: FlagKey,
    schedule_id: ScheduleId,
    ctx: Page = Depends(action("schedules.cancel")),  # noqa: B008
) -> Response:
    return _act(ctx, "cancel", flag_key, schedule_id)


@router.post(_ONE + "/retry")
def retry(
    flag_key: FlagKey,
    schedule_id: ScheduleId,
    ctx: Page = Depends(action("schedules.retry")),  # noqa: B008
) -> Response:
    return _act(ctx, "retry", flag_key, schedule_id)


# --- edit: the form, the review (the confirm step), the change ----------------------


def _edit_fields(ctx: Page) -> dict[str, str]:
    return {
        name: ctx.one(name)
        for name in ("scheduled_at", "priority", "updates", "retry_policy", "max_retries")
    }


def parse_edit(fields: dict[str, str], current: dict[str, Any]) -> ScheduleEdit:
    """The edit a form asks for: only the fields whose text differs from the schedule's
    current value (``current``, the same texts the form was filled with)."""
    body: dict[str, Any] = {}
    for name, text in fields.items():
        if text == current.get(name, ""):
            continue
        if name in ("updates", "retry_policy"):
            body[name] = json.loads(text) if text else None
        elif name == "max_retries":
            body[name] = int(text) if text else None
        else:
            body[name] = text or None
    return ScheduleEdit.model_validate(body)


def form_values(detail: ScheduleDetail) -> dict[str, str]:
    """The edit form's fields as the schedule has them now."""
    s = detail.schedule
    return {
        "scheduled_at": s.scheduled_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "priority": s.priority.value,
        "updates": json.dumps(s.updates, sort_keys=True),
        "retry_policy": json.dumps(s.retry_policy, sort_keys=True) if s.retry_policy else "",
        "max_retries": "" if s.max_retries is None else str(s.max_retries),
    }


def _edit_page(
    ctx: Page, detail: ScheduleDetail, values: dict[str, str], error: str = "", status: int = 200
) -> HTMLResponse:
    s = detail.schedule
    return render(
        ctx.request,
        "schedule_edit.html",
        {
            "title": f"Edit schedule {s.id}",
            "nav": "/ui/schedules",
            "s": s,
            "v": values,
            "error": error,
            "url": detail_url(s.flag_key, s.id),
        },
        status=status,
    )


@router.get(_ONE + "/edit")
def edit_form(
    flag_key: FlagKey,
    schedule_id: ScheduleId,
    ctx: Page = Depends(page("schedules.edit")),  # noqa: B008
) -> HTMLResponse:
    detail = ctx.service.show(ctx.actor, flag_key, schedule_id)
    return _edit_page(ctx, detail, form_values(detail))


@router.post(_ONE + "/edit/review")
def edit_review(
    flag_key: FlagKey,
    schedule_id: ScheduleId,
    ctx: Page = Depends(action("schedules.edit")),  # noqa: B008
) -> HTMLResponse:
    detail = ctx.service.show(ctx.actor, flag_key, schedule_id)
    fields, current = _edit_fields(ctx), form_values(detail)
    try:
        edit = parse_edit(fields, current)
    except (ValueError, ValidationError) as exc:
        return _edit_page(ctx, detail, fields, describe(exc), status=422)
    changes = [(name, current[name], fields[name]) for name in edit.model_fields_set]
    return render(
        ctx.request,
        "schedule_edit_review.html",
        {
            "title": f"Review the edit of schedule {schedule_id}",
            "nav": "/ui/schedules",
            "s": detail.schedule,
            "fields": fields,
            "changes": sorted(changes),
            "original": json.dumps(current),
            "url": detail_url(flag_key, schedule_id),
            "key": secrets.token_urlsafe(16),
        },
    )


@router.post(_ONE + "/edit")
def edit(
    flag_key: FlagKey,
    schedule_id: ScheduleId,
    ctx: Page = Depends(action("schedules.edit")),  # noqa: B008
) -> Response:
    detail = ctx.service.show(ctx.actor, flag_key, schedule_id)
    fields = _edit_fields(ctx)
    actor = replace(ctx.actor, idempotency_key=ctx.one("idempotency_key") or None)
    try:
        body = parse_edit(fields, json.loads(ctx.one("original") or "{}"))
        ctx.service.edit(actor, flag_key, schedule_id, body)
    except (ValueError, ValidationError) as exc:
        return _edit_page(ctx, detail, fields, describe(exc), status=422)
    except AdminError as exc:
        return _edit_page(ctx, detail, fields, exc.detail, status=exc.status)
    return RedirectResponse(detail_url(flag_key, schedule_id) + "?done=edit", status_code=303)
