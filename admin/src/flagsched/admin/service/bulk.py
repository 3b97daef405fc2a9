"""Bulk cancel and bulk retry of every schedule matching a filter (not one page).

A dry run (the default) counts the matching schedules in a status the action applies
to and shows a sample. A real one freezes that selection into an ``admin_bulk_actions``
job (migration 0011), audited in the same transaction, and returns at once;
:func:`step` then works it through in batches of ``FLAGSCHED_ADMIN_BULK_BATCH``, each
in its own transaction with the job row locked (``SKIP LOCKED``), persisting the
position, so any admin process resumes a job whose process died. Each schedule goes
through the single action's own code (:func:`schedules_write.cancel` or ``retry``), so
each writes its own audit row and Kafka records exactly as one click would; a schedule
that has moved on meanwhile (applied, already cancelled) is counted as skipped.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from flagsched.admin.service import audit, schedules_write
from flagsched.admin.service.access import Actor
from flagsched.admin.service.background import JobRunner
from flagsched.admin.service.bulk_models import (
    BulkAction,
    BulkActionRequest,
    BulkKind,
    BulkPlan,
    ScheduleSelection,
)
from flagsched.admin.service.env import Env, to_schedule
from flagsched.admin.service.errors import AdminError, Forbidden, NotFound, TooLarge
from flagsched.admin.service.models import LIVE, Status
from flagsched.admin.service.mutation import Outcome
from flagsched.admin.service.schedules_read import ScheduleFilter, where_schedules
from flagsched.runtime.db.connect import DictConnection

log = logging.getLogger(__name__)

SAMPLE = 10
#: The statuses each action applies to (the single actions' own rules).
APPLIES_TO: dict[str, tuple[Status, ...]] = {"cancel": LIVE, "retry": ("retrying", "dead")}


def as_filter(sel: ScheduleSelection, action: BulkKind) -> ScheduleFilter | None:
    """The list filter of ``sel``, narrowed to the statuses ``action`` applies to (None:
    the filter names only statuses the action does not apply to, so nothing matches)."""
    wanted = APPLIES_TO[action]
    statuses = [s for s in sel.status if s in wanted] if sel.status else list(wanted)
    if not statuses:
        return None
    return ScheduleFilter(
        status=statuses,
        flag_key=sel.flag_key,
        flag_prefix=sel.flag_prefix,
        priority=sel.priority.value if sel.priority else None,
        error_class=sel.error_class,
        due_after=sel.due_after,
        due_before=sel.due_before,
    )


def _check(actor: Actor, action: BulkKind) -> None:
    if not actor.allowed(f"schedules.{action}"):
        raise Forbidden(f"role {actor.role} may not schedules.{action}")


def _select(
    conn: DictConnection, actor: Actor, f: ScheduleFilter | None, *, limit: int, columns: str = "id"
) -> list[dict[str, Any]]:
    if f is None:
        return []
    where, params = where_schedules(f, actor)
    sql = f"SELECT {columns} FROM flag_schedules WHERE {' AND '.join(where)} ORDER BY id LIMIT %s"
    return conn.execute(sql, (*params, limit)).fetchall()


def plan(conn: DictConnection, env: Env, actor: Actor, req: BulkActionRequest) -> BulkPlan:
    """How many schedules ``req`` would touch, and the first few of them."""
    _check(actor, req.action)
    f = as_filter(req.filter, req.action)
    count = 0
    if f is not None:
        where, params = where_schedules(f, actor)
        row = conn.execute(
            f"SELECT count(*) AS n FROM flag_schedules WHERE {' AND '.join(where)}", params
        ).fetchone()
        count = int(row["n"]) if row else 0
    sample = [to_schedule(r) for r in _select(conn, actor, f, limit=SAMPLE, columns="*")]
    return BulkPlan(action=req.action, count=count, sample=sample)


def to_bulk(row: dict[str, Any]) -> BulkAction:
    """The API view of a job row."""
    return BulkAction.model_validate(row | {"total": len(row["schedule_ids"])})


def start(conn: DictConnection, env: Env, actor: Actor, req: BulkActionRequest) -> Outcome:
    """Freeze the selection into a job (audited); :func:`step` then works it through."""
    _check(actor, req.action)
    cap = env.admin.admin_bulk_max
    f = as_filter(req.filter, req.action)
    ids = [int(r["id"]) for r in _select(conn, actor, f, limit=cap + 1)]
    if len(ids) > cap:
        raise TooLarge(
            f"more than {cap} schedules match (FLAGSCHED_ADMIN_BULK_MAX): narrow the filter"
        )
    row = conn.execute(
        "INSERT INTO admin_bulk_actions (action, filter, created_by, created_role,"
        " created_prefixes, schedule_ids, status, finished_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING *",
        (
            req.action,
            Jsonb(req.filter.model_dump(mode="json", exclude_defaults=True)),
            actor.name,
            actor.role,
            list(actor.prefixes),
            ids,
            "running" if ids else "done",
            None if ids else "now",
        ),
    ).fetchone()
    assert row is not None
    audit.record(
        conn,
        actor,
        f"schedules.bulk_{req.action}",
        "bulk_action",
        [row["id"]],
        after={"filter": row["filter"], "schedule_ids": ids},
    )
    log.info(
        "bulk_action=%s %s of %d schedules started by %s request=%s",
        row["id"],
        req.action,
        len(ids),
        actor.name,
        actor.request_id,
    )
    return Outcome.of(202, to_bulk(row), f"/api/admin/bulk-actions/{row['id']}")


def get(conn: DictConnection, bulk_id: int) -> BulkAction:
    """A job and its progress."""
    row = conn.execute("SELECT * FROM admin_bulk_actions WHERE id = %s", (bulk_id,)).fetchone()
    if row is None:
        raise NotFound(f"no bulk action {bulk_id}")
    return to_bulk(row)


def _one(conn: DictConnection, env: Env, actor: Actor, action: str, row: dict[str, Any]) -> bool:
    """Apply ``action`` to one schedule in a savepoint; False if it no longer applies or
    the row itself is refused (a bad row harms only itself; an outage fails the batch)."""
    act = schedules_write.cancel if action == "cancel" else schedules_write.retry
    try:
        with conn.transaction():
            act(conn, env, actor, row["flag_key"], int(row["id"]))
    except AdminError:  # moved on since the selection (or out of the creator's prefixes)
        return False
    except (psycopg.errors.IntegrityError, psycopg.errors.DataError) as exc:
        log.warning(
            "schedule=%s flag=%s bulk %s refused by the database: %s request=%s",
            row["id"],
            row["flag_key"],
            action,
            type(exc).__name__,
            actor.request_id,
        )
        return False
    return True


def step(conn: DictConnection, env: Env, batch: int) -> tuple[int | None, int]:
    """Work the next ``batch`` schedules of one running job; (job id, count) or (None, 0)."""
    with conn.transaction():
        job = conn.execute(
            "SELECT * FROM admin_bulk_actions WHERE status = 'running' ORDER BY id LIMIT 1"
            " FOR UPDATE SKIP LOCKED"
        ).fetchone()
        if job is None:
            return None, 0
        actor = Actor(
            name=job["created_by"],
            role=job["created_role"],
            prefixes=tuple(job["created_prefixes"]),
            request_id=f"bulk-action:{job['id']}",
        )
        todo = job["schedule_ids"][job["position"] : job["position"] + batch]
        rows = conn.execute(
            "SELECT id, flag_key FROM flag_schedules WHERE id = ANY(%s) ORDER BY id", (todo,)
        ).fetchall()
        done = sum(_one(conn, env, actor, job["action"], r) for r in rows)
        position = job["position"] + len(todo)
        finished = position >= len(job["schedule_ids"])
        conn.execute(
            "UPDATE admin_bulk_actions SET position = %s, done = done + %s,"
            " skipped = skipped + %s, status = %s, finished_at = %s, updated_at = now()"
            " WHERE id = %s",
            (
                position,
                done,
                len(todo) - done,
                "done" if finished else "running",
                "now" if finished else None,
                job["id"],
            ),
        )
    log.info(
        "bulk_action=%s %s: %d of %d done in this batch, position %d/%d",
        job["id"],
        job["action"],
        done,
        len(todo),
        position,
        len(job["schedule_ids"]),
    )
    return int(job["id"]), len(todo)


class BulkRunner(JobRunner):
    """A thread that works bulk actions through; woken when one starts, else polling."""

    what = "bulk-action"
    thread_name = "admin-bulk"

    def round(self, conn: DictConnection) -> None:
        """Step through every running job, a batch at a time."""
        while not self._stop.is_set():
            job_id, _ = step(conn, self._env, self._env.admin.admin_bulk_batch)
            if job_id is None:
                return
            self._on_commit()
