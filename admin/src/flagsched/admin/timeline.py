"""The retry timeline of one schedule as drawing primitives on a time axis (pure: no I/O).

The schedule detail page draws it as SVG: the recorded attempts (from the attempt rows)
and the planned ones (from :func:`flagsched.schemas.retry.preview`, what the API's
detail calls the plan) sit on one horizontal axis with a "now" marker.

Backoff grows geometrically, so a linear axis would crowd the first retries into a
few pixels. The axis is therefore piecewise linear between consecutive event times,
each gap's width growing with the logarithm of its length plus a floor: the order of
events is kept, equal times share a position and distinct times are at least
:data:`MIN_GAP_PX` apart. The page says the axis is compressed.

The rules a drawing keeps (the unit tests check them with Hypothesis):

* every position is within ``[x_min, x_max]``, the now marker too;
* a later time is never left of an earlier one;
* label boxes never overlap each other and stay inside the drawing: each label goes
  to the first lane below the axis where it fits;
* label text is plain text: escaping it is the template's job (Jinja autoescape).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from flagsched.admin.service.models import Attempt
from flagsched.schemas.retry import PlannedAttempt

WIDTH_PX = 960
MARGIN_PX = 16
AXIS_Y = 40
LANE_TOP = 62
LANE_H = 40
LABEL_H = 34
#: An estimate of one character's width at the label font size (12 px sans-serif).
CHAR_PX = 7.0
LABEL_PAD_PX = 6.0
#: Labels longer than this are cut (the full text is in the tooltip and the table).
LABEL_CHARS = 34
#: Distinct event times are at least this far apart on the axis.
MIN_GAP_PX = 4.0
#: The narrowest drawing: the widest label plus the margins.
MIN_WIDTH_PX = LABEL_CHARS * CHAR_PX + LABEL_PAD_PX + 2 * MARGIN_PX
#: Only the newest recorded and the next planned attempts are drawn (the tables list all).
MAX_PAST = 20
MAX_PLANNED = 10

#: The CSS class of a recorded attempt's dot, by outcome.
OUTCOME_STATE = {
    "applied": "applied",
    "retry": "failed",
    "dead": "dead",
    "superseded": "superseded",
    "cancelled": "cancelled",
}
_OUTCOME_WORD = {
    "applied": "applied",
    "retry": "failed",
    "dead": "dead-lettered",
    "superseded": "superseded",
    "cancelled": "cancelled",
}


@dataclass(frozen=True)
class Box:
    """A label's rectangle (SVG user units, y down)."""

    x: float
    y: float
    w: float
    h: float

    def overlaps(self, other: Box) -> bool:
        """Whether the two rectangles share any interior point."""
        return (
            self.x < other.x + other.w
            and other.x < self.x + self.w
            and self.y < other.y + other.h
            and other.y < self.y + self.h
        )


@dataclass(frozen=True)
class Mark:
    """One attempt on the axis: a dot at ``x``, a leader down to its label box."""

    attempt: int
    at: datetime
    x: float
    planned: bool
    state: str  # CSS class: applied, failed, dead, superseded, cancelled, planned, overdue
    label: str
    detail: str
    title: str  # the tooltip: everything, uncut
    href: str | None
    lane: int
    box: Box

    @property
    def text_x(self) -> float:
        """Where the label's text starts (left-aligned inside its box)."""
        return self.box.x + LABEL_PAD_PX / 2


@dataclass(frozen=True)
class Timeline:
    """Everything the SVG needs; the template only loops over it."""

    width: float
    height: float
    axis_y: float
    x_min: float
    x_max: float
    start: datetime
    end: datetime
    now: datetime
    now_x: float
    marks: tuple[Mark, ...]
    hidden_past: int  # recorded attempts not drawn (older than the newest MAX_PAST)
    hidden_planned: int  # planned attempts not drawn (after the next MAX_PLANNED)


def humanize_s(seconds: float) -> str:
    """A duration in words, rounded to its largest unit: "45 seconds", "2 minutes"."""
    s = abs(seconds)
    for unit, size in (("day", 86400.0), ("hour", 3600.0), ("minute", 60.0)):
        if s >= size * 0.95:
            n = max(1, round(s / size))
            return f"{n} {unit}" + ("s" if n != 1 else "")
    n = max(1, round(s))
    return f"{n} second" + ("s" if n != 1 else "")


def relative(at: datetime, now: datetime) -> str:
    """``at`` relative to ``now``: "in 2 minutes", "3 seconds ago" or "now"."""
    delta = (at - now).total_seconds()
    if abs(delta) < 0.5:
        return "now"
    return f"in {humanize_s(delta)}" if delta > 0 else f"{humanize_s(delta)} ago"


def tier_path(tiers: Sequence[float]) -> str:
    """The tier hops of a planned attempt, runs folded: "30 s x2 → 5 s"."""
    out: list[str] = []
    i = 0
    while i < len(tiers):
        j = i
        while j < len(tiers) and tiers[j] == tiers[i]:
            j += 1
        out.append(_tier_name(tiers[i]) + (f" x{j - i}" if j - i > 1 else ""))
        i = j
    return " → ".join(out)


def _tier_name(tier_s: float) -> str:
    for unit, size in (("h", 3600.0), ("m", 60.0)):
        if tier_s >= size and tier_s % size == 0:
            return f"{tier_s / size:g} {unit}"
    return f"{tier_s:g} s"


def _cut(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def _past_mark(a: Attempt, now: datetime) -> tuple[str, str, str]:
    word = _OUTCOME_WORD.get(a.outcome, a.outcome)
    label = f"Attempt {a.attempt} {word}"
    detail = " · ".join(p for p in (a.error_class, relative(a.started_at, now)) if p)
    late = "" if a.lateness_ms is None else f"; {a.lateness_ms:.0f} ms late"
    error = f"; {a.error_class}: {a.error_message}" if a.error_class else ""
    title = f"{label} at {a.started_at:%Y-%m-%d %H:%M:%S} UTC{late}{error}"
    return label, detail, title


def _planned_mark(p: PlannedAttempt, now: datetime) -> tuple[str, str, str]:
    name = "Attempt 1" if p.attempt == 1 else f"Retry {p.attempt - 1}"
    when = relative(p.at, now)
    label = f"{name} {'due ' + when if p.at <= now else when}"
    detail = f"tiers {tier_path(p.tiers)}" if p.tiers else "held until due"
    if p.attempt == 1:
        detail = "first attempt"
    title = (
        f"{name} (attempt {p.attempt}) planned at {p.at:%Y-%m-%d %H:%M:%S} UTC after"
        f" {p.delay_s:.1f} s; {detail}"
    )
    return label, detail, title


class _Scale:
    """Piecewise-linear time → x over the sorted distinct event times."""

    def __init__(self, times: Sequence[datetime], x_min: float, x_max: float) -> None:
        self.times = sorted(set(times))
        gaps = [(b - a).total_seconds() for a, b in zip(self.times, self.times[1:], strict=False)]
        weights = [1.0 + math.log1p(g) for g in gaps]
        span = x_max - x_min
        total = sum(weights)
        # Each gap gets at least MIN_GAP_PX when the drawing is wide enough for all.
        floor = min(MIN_GAP_PX, span / len(gaps)) if gaps else 0.0
        free = span - floor * len(gaps)
        self.xs = [x_min]
        for w in weights:
            self.xs.append(self.xs[-1] + floor + free * w / total)
        if gaps:
            self.xs[-1] = x_max  # no float drift past the end
        else:
            self.xs = [(x_min + x_max) / 2]

    def __call__(self, at: datetime) -> float:
        # Every time asked for is one of the event times.
        return self.xs[self.times.index(at)]


def _place(x: float, label: str, detail: str, width: float, placed: list[Box]) -> tuple[int, Box]:
    w = max(len(label), len(detail)) * CHAR_PX + LABEL_PAD_PX
    left = min(max(x - LABEL_PAD_PX / 2, 0.0), width - w)
    lane = 0
    while True:
        box = Box(left, LANE_TOP + lane * LANE_H, w, LABEL_H)
        if not any(box.overlaps(b) for b in placed):
            return lane, box
        lane += 1


def build_timeline(
    attempts: Sequence[Attempt],
    plan: Sequence[PlannedAttempt],
    now: datetime,
    *,
    scheduled_at: datetime | None = None,
    width: float = WIDTH_PX,
) -> Timeline:
    """The timeline of recorded ``attempts`` and planned ``plan`` as seen at ``now``.

    ``scheduled_at`` (the schedule's due time) is where the axis starts when it is the
    earliest time. All times must be timezone-aware; ``width`` at least
    :data:`MIN_WIDTH_PX` (the widest label fits).
    """
    if width < MIN_WIDTH_PX:
        raise ValueError(f"width must be at least {MIN_WIDTH_PX} px, got {width}")
    past = sorted(attempts, key=lambda a: (a.started_at, a.attempt))
    shown_past = past[-MAX_PAST:]
    shown_plan = sorted(plan, key=lambda p: (p.at, p.attempt))[:MAX_PLANNED]
    times = [now, *(a.started_at for a in shown_past), *(p.at for p in shown_plan)]
    if scheduled_at is not None:
        times.append(scheduled_at)
    x_min, x_max = MARGIN_PX, width - MARGIN_PX
    scale = _Scale(times, x_min, x_max)
    marks: list[Mark] = []
    boxes: list[Box] = []
    entries: list[tuple[datetime, int, bool, object]] = [
        (a.started_at, a.attempt, False, a) for a in shown_past
    ] + [(p.at, p.attempt, True, p) for p in shown_plan]
    for at, number, planned, item in sorted(entries, key=lambda e: (e[0], e[1])):
        x = scale(at)
        if isinstance(item, PlannedAttempt):
            label, detail, title = _planned_mark(item, now)
            state, href = ("overdue" if item.at < now else "planned"), None
        else:
            assert isinstance(item, Attempt)
            label, detail, title = _past_mark(item, now)
            state, href = OUTCOME_STATE.get(item.outcome, "failed"), item.trace_url
        label, detail = _cut(label), _cut(detail)
        lane, box = _place(x, label, detail, width, boxes)
        boxes.append(box)
        marks.append(Mark(number, at, x, planned, state, label, detail, title, href, lane, box))
    lanes = max((m.lane for m in marks), default=-1) + 1
    height = LANE_TOP + max(lanes, 1) * LANE_H + MARGIN_PX / 2
    return Timeline(
        width=width,
        height=height,
        axis_y=AXIS_Y,
        x_min=x_min,
        x_max=x_max,
        start=scale.times[0],
        end=scale.times[-1],
        now=now,
        now_x=scale(now),
        marks=tuple(marks),
        hidden_past=len(past) - len(shown_past),
        hidden_planned=len(plan) - len(shown_plan),
    )
