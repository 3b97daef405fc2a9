"""Redrive: re-arm dead schedules (the row is the truth) at a bounded rate.

A dry run (the default) counts what a redrive would select and what it would skip.
A real one freezes the selection into an ``admin_redrives`` job and returns at once;
:func:`step` works the job through in small batches, each in its own transaction with
the job row locked (``SKIP LOCKED``), so any admin process can resume a job whose
process died. A schedule whose flag has since moved on (newer changes set every field
it sets) is skipped and reported, not re-armed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from psycopg.types.json import Jsonb

from flagsched.admin.service import audit
from flagsched.admin.service.access import Actor
from flagsched.admin.service.background import JobRunner
from flagsched.admin.service.dead_letters import select_dead
from flagsched.admin.service.env import Env
from flagsched.admin.service.errors import NotFound
from flagsched.admin.service.models import Redrive, RedrivePlan, RedriveRequest
from flagsched.admin.service.mutation import Outcome
from flagsched.admin.service.ordering import would_supersede
from flagsched.admin.service.schedules_write import flag_of, reopen_dead
from flagsched.runtime.db.connect import DictConnection

log = logging.getLogger(__name__)

SAMPLE = 10


def _selection(conn: DictConnection, env: Env, actor: Actor, req: RedriveRequest) -> list[int]:
    cap = min(req.limit or env.admin.admin_redrive_max, env.admin.admin_redrive_max)
    rows = select_dead(conn, actor, req.filter, ids=req.schedule_ids, limit=cap)
    return [r.schedule_id for r in rows]


def _moved_on(conn: DictConnection, ids: list[int]) -> set[int]:
    rows = conn.execute("SELECT * FROM flag_schedules WHERE id = ANY(%s)", (ids,)).fetchall()
    flags: dict[str, Any] = {}
    skip = set()
    for r in rows:
        if r["flag_key"] not in flags:
            flags[r["flag_key"]] = flag_of(conn, r["flag_key"])
        if would_supersede(flags[r["flag_key"]], r):
            skip.add(int(r["id"]))
    return skip


def plan(conn: DictConnection, env: Env, actor: Actor, req: RedriveRequest) -> RedrivePlan:
    """What a redrive of ``req`` would do: the count, those skipped and a sample."""
    ids = _selection(conn, env, actor, req)
    sample = select_dead(conn, actor, req.filter, ids=ids[:SAMPLE], limit=SAMPLE)
    return RedrivePlan(count=len(ids), would_skip=len(_moved_on(conn, ids)), sample=sample)


def to_redrive(row: dict[str, Any]) -> Redrive:
    """The API view of a job row."""
    return Redrive.model_validate(row | {"total": len(row["schedule_ids"])})


def start(conn: DictConnection, env: Env, actor: Actor, req: RedriveRequest) -> Outcome:
    """Freeze the selection into a job (audited); :func:`step` then works it through."""
    ids = _selection(conn, env, actor, req)
    rate = req.rate_per_s or env.admin.admin_redrive_rate_per_s
    row = conn.execute(
        "INSERT INTO admin_redrives (created_by, filter, rate_per_s, schedule_ids, status,"
        " finished_at) VALUES (%s, %s, %s, %s, %s, %s) RETURNING *",
        (
            actor.name,
            Jsonb(req.model_dump(mode="json", exclude={"schedule_ids"})),
            rate,
            ids,
            "running" if ids else "done",
            None if ids else "now",
        ),
    ).fetchone()
    assert row is not None
    job = to_redrive(row)
    audit.record(
        conn, actor, "dead_letters.redrive", "redrive", [row["id"]], after={"schedule_ids": ids}
    )
    log.info(
        "redrive=%s of %d schedules at %.1f/s started by %s request=%s",
        row["id"],
        len(ids),
        rate,
        actor.name,
        actor.request_id,
    )
    return Outcome.of(202, job, f"/api/admin/redrives/{row['id']}")


def get(conn: DictConnection, redrive_id: int) -> Redrive:
    """A job and its progress."""
    row = conn.execute("SELECT * FROM admin_redrives WHERE id = %s", (redrive_id,)).fetchone()
    if row is None:
        raise NotFound(f"no redrive {redrive_id}")
    return to_redrive(row)


def step(conn: DictConnection, env: Env, batch: int) -> tuple[int | None, int]:
    """Re-arm the next ``batch`` schedules of one running job; (job id, count) or (None, 0)."""
    with conn.transaction():
        job = conn.execute(
            "SELECT * FROM admin_redrives WHERE status = 'running' ORDER BY id LIMIT 1"
            " FOR UPDATE SKIP LOCKED"
        ).fetchone()
        if job is None:
            return None, 0
        todo = job["schedule_ids"][job["position"] : job["position"] + batch]
        skip = _moved_on(conn, todo)
        redriven, skipped = 0, []
        for sid in todo:
            row = conn.execute(
                "SELECT * FROM flag_schedules WHERE id = %s FOR UPDATE", (sid,)
            ).fetchone()
            if row is None or row["status"] != "dead":
                continue  # retried by hand or already redriven: nothing to do
            if sid in skip:
                skipped.append(sid)
                continue
            reopen_dead(conn, env, row)
            redriven += 1
        position = job["position"] + len(todo)
        done = position >= len(job["schedule_ids"])
        conn.execute(
            "UPDATE admin_redrives SET position = %s, redriven = redriven + %s,"
            " skipped = skipped + %s, skipped_ids = skipped_ids || %s::bigint[],"
            " status = %s, finished_at = CASE WHEN %s THEN now() END, updated_at = now()"
            " WHERE id = %s",
            (
                position,
                redriven,
                len(skipped),
                skipped,
                "done" if done else "running",
                done,
                job["id"],
            ),
        )
    return int(job["id"]), len(todo)


def job_rate(conn: DictConnection, redrive_id: int) -> float:
    """The rate of a job, schedules per second."""
    row = conn.execute(
        "SELECT rate_per_s FROM admin_redrives WHERE id = %s", (redrive_id,)
    ).fetchone()
    return float(row["rate_per_s"]) if row else 1.0


def batch_for(rate_per_s: float) -> int:
    """Schedules per step: about ten steps a second, at least one."""
    return max(1, min(500, int(rate_per_s / 10)))


def run_until_idle(
    conn: DictConnection,
    env: Env,
    stop: threading.Event,
    on_commit: Callable[[], None] = lambda: None,
) -> None:
    """Work every running job through at its rate until none is left (or ``stop``)."""
    rate = 10.0
    while not stop.is_set():
        began = time.monotonic()
        job_id, n = step(conn, env, batch_for(rate))
        if job_id is None:
            return
        on_commit()
        rate = job_rate(conn, job_id)
        # Pace the batches: n schedules may take no less than n / rate seconds.
        stop.wait(max(0.0, n / rate - (time.monotonic() - began)))


class RedriveRunner(JobRunner):
    """A thread that runs redrive jobs; woken when one starts, and polling every ``poll_s``."""

    what = "redrive"
    thread_name = "admin-redrive"

    def round(self, conn: DictConnection) -> None:
        """Run the redrives in hand until none is left."""
        run_until_idle(conn, self._env, self._stop, self._on_commit)
