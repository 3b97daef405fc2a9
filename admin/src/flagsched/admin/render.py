"""Plain-text tables of the admin resources for the CLI (``--json`` prints the models)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from flagsched.admin.service.models import (
    DeadLetter,
    Preview,
    Redrive,
    RedrivePlan,
    Schedule,
    ScheduleDetail,
)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, datetime):
        return v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A fixed-width table; ``(none)`` when empty."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    line = "  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join([line.rstrip(), *(b.rstrip() for b in body)] if body else [line, "(none)"])


def schedules(items: Sequence[Schedule]) -> str:
    """A list of schedules."""
    return table(
        ["id", "flag", "status", "scheduled_at", "priority", "retries", "next_retry_at", "error"],
        [
            [
                s.id,
                s.flag_key,
                s.status,
                s.scheduled_at,
                s.priority.value,
                s.retry_count,
                s.next_retry_at,
                s.last_error_class,
            ]
            for s in items
        ],
    )


def detail(d: ScheduleDetail) -> str:
    """One schedule, its attempts and its plan."""
    s = d.schedule
    head = [
        f"schedule {s.id} of flag {s.flag_key}: {s.status}",
        f"  updates {s.updates}  scheduled_at {_cell(s.scheduled_at)}  priority {s.priority.value}",
        f"  retry_count {s.retry_count}  max_retries {_cell(s.max_retries)}"
        f"  retry_policy {_cell(s.retry_policy)}",
    ]
    attempts = table(
        ["attempt", "started_at", "lateness_ms", "outcome", "error_class", "worker", "trace"],
        [
            [
                a.attempt,
                a.started_at,
                a.lateness_ms,
                a.outcome,
                a.error_class,
                a.worker,
                a.trace_url or a.trace_id,
            ]
            for a in d.attempts
        ],
    )
    return "\n".join([*head, "", "Attempts", attempts, "", "Plan", plan(d.plan)])


def plan(attempts: Sequence[Any]) -> str:
    """Planned attempts."""
    return table(
        ["attempt", "at", "delay_s", "tiers"],
        [[p.attempt, p.at, p.delay_s, ",".join(f"{t:g}s" for t in p.tiers)] for p in attempts],
    )


def preview(p: Preview) -> str:
    """A retry timeline with its policy."""
    return f"policy {p.policy}\nafter a failure at {_cell(p.failed_at)}\n" + plan(p.attempts)


def dead_letters(items: Sequence[DeadLetter]) -> str:
    """A list of dead letters."""
    return table(
        ["schedule", "flag", "attempt", "reason", "error_class", "dead_at", "message"],
        [
            [
                d.schedule_id,
                d.flag_key,
                d.attempt,
                d.reason,
                d.error_class,
                d.dead_at,
                (d.error_message or "")[:60],
            ]
            for d in items
        ],
    )


def redrive_plan(p: RedrivePlan) -> str:
    """A dry run's answer."""
    return (
        f"would redrive {p.count} dead schedule(s), skipping {p.would_skip} whose flag moved on\n"
        + dead_letters(p.sample)
    )


def redrive(r: Redrive) -> str:
    """A job's progress."""
    return (
        f"redrive {r.id}: {r.status}, {r.position}/{r.total} done ({r.redriven} redriven,"
        f" {r.skipped} skipped) at {r.rate_per_s:g}/s, by {r.created_by}"
        + (f"; error: {r.error}" if r.error else "")
    )
