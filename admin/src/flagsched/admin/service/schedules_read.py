"""The read-only schedule actions: list with filters, show with attempts and plan, and
the retry previews (computed by :func:`flagsched.schemas.retry.preview`, as the worker)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from flagsched.admin.service.access import Actor
from flagsched.admin.service.env import Env, Row, find_schedule, to_schedule
from flagsched.admin.service.errors import InvalidInput
from flagsched.admin.service.models import (
    Attempt,
    Page,
    PolicyPreviewRequest,
    Preview,
    ScheduleDetail,
    Status,
)
from flagsched.admin.service.paging import decode_cursor, encode_cursor
from flagsched.runtime.db.connect import DictConnection
from flagsched.schemas.retry import (
    PlannedAttempt,
    PolicyOverride,
    RetryPolicy,
    hop_path,
    planned_delay_s,
    policy_for,
    preview,
)

Sort = Literal["scheduled_at", "-scheduled_at", "created_at", "-created_at", "id", "-id"]
SORTS: tuple[str, ...] = ("scheduled_at", "-scheduled_at", "created_at", "-created_at", "id", "-id")
STATUSES: tuple[str, ...] = get_args(Status)


@dataclass(frozen=True)
class ScheduleFilter:
    """Which schedules a list returns; every field narrows it."""

    status: list[Status] = field(default_factory=list)
    flag_key: str | None = None
    flag_prefix: str | None = None
    priority: str | None = None
    error_class: str | None = None
    due_after: datetime | None = None
    due_before: datetime | None = None
    finished_after: datetime | None = None
    finished_before: datetime | None = None


def like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def where_schedules(f: ScheduleFilter, actor: Actor) -> tuple[list[str], list[Any]]:
    """The WHERE clauses (and their parameters) of ``f`` for ``actor``'s prefixes."""
    where: list[str] = []
    params: list[Any] = []
    if len(f.status) == 1:
        # Equality with a literal, not ANY nor a parameter: only then can the planner
        # prove the partial flag_schedules_status_due_idx (migration 0012) applies, in
        # a generic (prepared) plan too, and read it in due order instead of walking
        # the whole due order. The value is one of a closed set, never the caller's text.
        (status,) = f.status
        if status not in STATUSES:
            raise InvalidInput("status", f"one of {', '.join(STATUSES)}")
        where.append(f"status = '{status}'")
    simple = (
        ("status = ANY(%s)", list(f.status) if len(f.status) > 1 else None),
        ("flag_key = %s", f.flag_key),
        ("flag_key LIKE %s", like_prefix(f.flag_prefix) if f.flag_prefix else None),
        ("priority = %s", f.priority),
        ("last_error_class = %s", f.error_class),
        ("scheduled_at >= %s", f.due_after),
        ("scheduled_at < %s", f.due_before),
        ("finished_at >= %s", f.finished_after),
        ("finished_at < %s", f.finished_before),
    )
    for clause, value in simple:
        if value is not None:
            where.append(clause)
            params.append(value)
    if actor.prefixes:  # a caller limited to prefixes sees only those flags
        where.append("(" + " OR ".join(["flag_key LIKE %s"] * len(actor.prefixes)) + ")")
        params += [like_prefix(p) for p in actor.prefixes]
    return where, params


def list_sql(
    actor: Actor, f: ScheduleFilter, *, sort: str, cursor: str | None, limit: int
) -> tuple[str, list[Any]]:
    """The SQL of one page of :func:`list_schedules` (``limit`` rows) and its parameters."""
    if sort not in SORTS:
        raise InvalidInput("sort", f"one of {', '.join(SORTS)}")
    column, desc = sort.lstrip("-"), sort.startswith("-")
    where, params = where_schedules(f, actor)
    if cursor is not None:
        key = decode_cursor(cursor, "cursor")
        if len(key) != 2 or key[0] is None:
            raise InvalidInput("cursor", "not a cursor of this sort order")
        op = "<" if desc else ">"
        if column == "id":
            where.append(f"id {op} %s")
            params.append(int(key[1]))
        else:
            where.append(f"({column}, id) {op} (%s::timestamptz, %s)")
            params += [key[0], int(key[1])]
    order = f"{column} {'DESC' if desc else 'ASC'}" + (
        "" if column == "id" else f", id {'DESC' if desc else 'ASC'}"
    )
    sql = (
        "SELECT * FROM flag_schedules"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + f" ORDER BY {order} LIMIT %s"
    )
    return sql, [*params, limit]


def list_schedules(
    conn: DictConnection,
    actor: Actor,
    f: ScheduleFilter,
    *,
    sort: str = "scheduled_at",
    limit: int = 50,
    cursor: str | None = None,
) -> Page:
    """One page of schedules matching ``f``, in ``sort`` order (keyset pagination)."""
    sql, params = list_sql(actor, f, sort=sort, cursor=cursor, limit=limit + 1)
    rows = conn.execute(sql, params).fetchall()
    column = sort.lstrip("-")
    items = [to_schedule(r) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        value = last[column]
        next_cursor = encode_cursor(
            [value.isoformat() if isinstance(value, datetime) else value, last["id"]]
        )
    return Page(items=items, next_cursor=next_cursor)


def _last_finished(conn: DictConnection, schedule_id: int) -> datetime | None:
    row = conn.execute(
        "SELECT max(finished_at) AS at FROM schedule_retry_attempts WHERE schedule_id = %s",
        (schedule_id,),
    ).fetchone()
    return None if row is None else row["at"]


def plan_of(env: Env, row: Row, last_finished: datetime | None) -> list[PlannedAttempt]:
    """The attempts still planned for ``row``, assuming each fails as soon as it runs.

    While retrying, the next attempt is at ``next_retry_at``; its delay is counted from
    the last attempt's end (``last_finished``), so a manual "run now" shows its real,
    shorter wait; the later ones are the worker's backoff from there.
    """
    ladder = env.settings.retry_tiers_s
    if row["status"] == "retrying" and row["next_retry_at"] is not None:
        failed = int(row["retry_count"])
        policy = env.policy_of(row, row["last_error_class"])
        delay = planned_delay_s(policy, row["id"], failed)
        if last_finished is not None:
            delay = max(0.0, (row["next_retry_at"] - last_finished).total_seconds())
        upcoming = PlannedAttempt(
            attempt=failed + 1,
            at=row["next_retry_at"],
            delay_s=delay,
            tiers=hop_path(ladder, delay),
        )
        # The worker counts the time budget from the first failure (first_failed_at),
        # not from this retry: the plan must stop where the worker will.
        later = preview(
            policy,
            row["id"],
            row["next_retry_at"],
            ladder,
            attempts_failed=failed,
            retrying_since=row["first_failed_at"] or row["next_retry_at"],
        )
        return [upcoming, *later]
    if row["status"] in ("pending", "dispatched"):
        first = PlannedAttempt(attempt=1, at=row["scheduled_at"], delay_s=0.0, tiers=[])
        return [first, *preview(env.policy_of(row), row["id"], row["scheduled_at"], ladder)]
    return []


def show(
    conn: DictConnection, env: Env, actor: Actor, flag_key: str, schedule_id: int
) -> ScheduleDetail:
    """A schedule, every attempt (with a trace link) and the planned remaining attempts."""
    actor.check_flag(flag_key)
    row = find_schedule(conn, flag_key, schedule_id)
    rows = conn.execute(
        "SELECT * FROM schedule_retry_attempts WHERE schedule_id = %s ORDER BY attempt",
        (schedule_id,),
    ).fetchall()
    attempts = [
        Attempt.model_validate(
            {k: r.get(k) for k in Attempt.model_fields}
            | {"trace_url": env.admin.trace_url(r["trace_id"])}
        )
        for r in rows
    ]
    last = max((r["finished_at"] for r in rows), default=None)
    return ScheduleDetail(
        schedule=to_schedule(row), attempts=attempts, plan=plan_of(env, row, last)
    )


def preview_schedule(
    conn: DictConnection, env: Env, actor: Actor, flag_key: str, schedule_id: int
) -> Preview:
    """The retry timeline of one schedule (what ``show`` calls its plan)."""
    actor.check_flag(flag_key)
    row = find_schedule(conn, flag_key, schedule_id)
    policy = env.policy_of(row, row["last_error_class"])
    at = row["next_retry_at"] or row["scheduled_at"]
    plan = plan_of(env, row, _last_finished(conn, schedule_id))
    return Preview(policy=policy.model_dump(mode="json"), failed_at=at, attempts=plan)


def preview_policy(env: Env, body: PolicyPreviewRequest) -> Preview:
    """The timeline of a policy after a first failure at ``failed_at`` (default now)."""
    override = body.retry_policy or PolicyOverride()
    if body.max_retries is not None:
        override = override.model_copy(update={"max_retries": body.max_retries})
    env.check_policy(override, None)
    policy: RetryPolicy = policy_for(env.default_policy, override, body.error_class)
    failed_at = body.failed_at or datetime.now(UTC)
    attempts = preview(policy, body.schedule_id, failed_at, env.settings.retry_tiers_s)
    return Preview(policy=policy.model_dump(mode="json"), failed_at=failed_at, attempts=attempts)


def default_window() -> tuple[datetime, datetime]:
    """The last hour, for stats."""
    now = datetime.now(UTC)
    return now - timedelta(hours=1), now
