"""The mutating schedule actions: create, edit, cancel and manual retry.

Each runs inside :func:`flagsched.admin.service.mutation.run`'s transaction and writes
its audit row (and its Kafka records, through the outbox) in that same transaction.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from flagsched.admin.service import audit, outbox
from flagsched.admin.service.access import Actor
from flagsched.admin.service.env import Env, Row, find_schedule, schedule_path, to_schedule
from flagsched.admin.service.errors import InvalidInput, NotFound, StateConflict
from flagsched.admin.service.models import (
    LIVE,
    Cancelled,
    Conflict,
    Created,
    Retried,
    RetryAction,
    ScheduleCreate,
    ScheduleEdit,
)
from flagsched.admin.service.mutation import Outcome
from flagsched.admin.service.ordering import would_supersede
from flagsched.runtime.db.connect import DictConnection
from flagsched.schemas.events import (
    LifecycleEvent,
    LifecycleType,
    Priority,
    ScheduleDue,
    to_epoch_ms,
)
from flagsched.schemas.headers import RecordHeaders

log = logging.getLogger(__name__)


def _now_ms() -> datetime:
    """Now, to the millisecond: a due time must survive the epoch-ms header exactly."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _json(row: Row) -> dict[str, Any]:
    return to_schedule(row).model_dump(mode="json")


def conflicts(
    conn: DictConnection, env: Env, flag_key: str, at: datetime, fields: set[str], exclude: int
) -> list[Conflict]:
    """Other live schedules of the flag setting some of ``fields`` within the window."""
    window = timedelta(seconds=env.admin.admin_conflict_window_s)
    rows = conn.execute(
        "SELECT id, scheduled_at, status, updates FROM flag_schedules"
        " WHERE flag_key = %s AND status = ANY(%s) AND id <> %s"
        " AND scheduled_at BETWEEN %s AND %s ORDER BY scheduled_at, id",
        (flag_key, list(LIVE), exclude, at - window, at + window),
    ).fetchall()
    found = []
    for r in rows:
        overlap = sorted(fields & {k for k, v in (r["updates"] or {}).items() if v is not None})
        if overlap:
            found.append(
                Conflict(
                    schedule_id=r["id"],
                    scheduled_at=r["scheduled_at"],
                    status=r["status"],
                    fields=overlap,
                )
            )
    return found


def create(
    conn: DictConnection, env: Env, actor: Actor, flag_key: str, body: ScheduleCreate
) -> Outcome:
    """Create a schedule; a time in the past means now (and the response says so)."""
    actor.check_flag(flag_key)
    env.check_policy(body.retry_policy, body.max_retries)
    if conn.execute("SELECT 1 FROM feature_flags WHERE key = %s", (flag_key,)).fetchone() is None:
        raise NotFound(f"flag {flag_key!r} does not exist")
    now = datetime.now(UTC)
    past = body.scheduled_at <= now
    at = now if past else body.scheduled_at
    policy = body.retry_policy.model_dump(exclude_none=True) if body.retry_policy else None
    row = conn.execute(
        "INSERT INTO flag_schedules (flag_key, updates, scheduled_at, priority, max_retries,"
        " retry_policy) VALUES (%s, %s, %s, %s, %s, %s) RETURNING *",
        (
            flag_key,
            Jsonb(body.updates.fields()),
            at,
            body.priority.value,
            body.max_retries,
            Jsonb(policy) if policy else None,
        ),
    ).fetchone()
    assert row is not None
    found = conflicts(conn, env, flag_key, at, set(body.updates.fields()), row["id"])
    audit.record(conn, actor, "schedule.create", "schedule", [row["id"]], after=_json(row))
    log.info(
        "schedule=%s flag=%s created by %s request=%s",
        row["id"],
        flag_key,
        actor.name,
        actor.request_id,
    )
    created = Created(
        schedule=to_schedule(row),
        scheduled_in_past=past,
        requested_scheduled_at=body.scheduled_at,
        conflicts=found,
    )
    return Outcome.of(201, created, schedule_path(flag_key, row["id"]))


def _edit_sets(env: Env, row: Row, body: ScheduleEdit) -> dict[str, Any]:
    """The columns an edit changes; a field given as null is refused, naming it."""
    given = body.model_fields_set
    for name in ("updates", "scheduled_at", "priority"):
        if name in given and getattr(body, name) is None:
            raise InvalidInput(name, "cannot be null")
    sets: dict[str, Any] = {}
    if body.updates is not None:
        sets["updates"] = Jsonb(body.updates.fields())
    if body.scheduled_at is not None:
        if row["status"] == "retrying":
            raise StateConflict(
                f"schedule {row['id']} is retrying: its next attempt is at next_retry_at;"
                " retry it to run now, or cancel it"
            )
        sets["scheduled_at"] = max(body.scheduled_at, datetime.now(UTC))
    if body.priority is not None:
        sets["priority"] = body.priority.value
    if "retry_policy" in given or "max_retries" in given:
        policy = body.retry_policy
        if "retry_policy" not in given and row["retry_policy"]:
            policy = env.override_of(row | {"max_retries": None})
        max_retries = body.max_retries if "max_retries" in given else row["max_retries"]
        env.check_policy(policy, max_retries)
    if "retry_policy" in given:
        dumped = body.retry_policy.model_dump(exclude_none=True) if body.retry_policy else None
        sets["retry_policy"] = Jsonb(dumped) if dumped else None
    if "max_retries" in given:
        sets["max_retries"] = body.max_retries
    return sets


def edit(
    conn: DictConnection,
    env: Env,
    actor: Actor,
    flag_key: str,
    schedule_id: int,
    body: ScheduleEdit,
) -> Outcome:
    """Change a schedule not applied yet; moving the due time re-arms it (migration 0002)."""
    actor.check_flag(flag_key)
    row = find_schedule(conn, flag_key, schedule_id, lock=True)
    if row["status"] not in LIVE:
        raise StateConflict(f"schedule {schedule_id} is {row['status']}: it can no longer change")
    sets = _edit_sets(env, row, body)
    assignments = ", ".join(f"{k} = %({k})s" for k in sets)
    after = conn.execute(
        f"UPDATE flag_schedules SET {assignments}, updated_at = now() WHERE id = %(id)s"
        " RETURNING *",
        sets | {"id": schedule_id},
    ).fetchone()
    assert after is not None
    audit.record(
        conn,
        actor,
        "schedule.edit",
        "schedule",
        [schedule_id],
        before=_json(row),
        after=_json(after),
    )
    return Outcome.of(200, to_schedule(after))


def cancel(
    conn: DictConnection, env: Env, actor: Actor, flag_key: str, schedule_id: int
) -> Outcome:
    """Cancel a pending, dispatched or retrying schedule and publish ``cancelled`` once.

    The attempt the schedule waits for is recorded as cancelled with no due time, so
    its waiting wake-up no longer matches a recorded attempt and the worker drops it
    as stale (consumer/attempt.py ``triage``) instead of cancelling a second time.
    """
    actor.check_flag(flag_key)
    row = find_schedule(conn, flag_key, schedule_id, lock=True)
    if row["status"] not in LIVE:
        raise StateConflict(f"schedule {schedule_id} is {row['status']}: it cannot be cancelled")
    attempt = int(row["retry_count"]) + 1
    now = datetime.now(UTC)
    conn.execute(
        "INSERT INTO schedule_retry_attempts (schedule_id, attempt, started_at, finished_at,"
        " outcome, worker) VALUES (%s, %s, %s, %s, 'cancelled', %s)",
        (schedule_id, attempt, now, now, f"admin:{actor.name}"),
    )
    after = conn.execute(
        "UPDATE flag_schedules SET status = 'cancelled', finished_at = %s, finished_attempt = %s,"
        " next_retry_at = NULL, updated_at = now() WHERE id = %s RETURNING *",
        (now, attempt, schedule_id),
    ).fetchone()
    assert after is not None
    event = LifecycleEvent(
        type=LifecycleType.CANCELLED,
        schedule_id=schedule_id,
        flag_key=flag_key,
        attempt=attempt,
        occurred_at=now,
        scheduled_at=row["scheduled_at"],
        priority=row["priority"],
    )
    outbox.enqueue(
        conn, env.layout.lifecycle, flag_key.encode(), event.model_dump_json().encode(), []
    )
    audit.record(
        conn,
        actor,
        "schedule.cancel",
        "schedule",
        [schedule_id],
        before=_json(row),
        after=_json(after),
    )
    log.info(
        "schedule=%s flag=%s attempt=%s cancelled by %s request=%s",
        schedule_id,
        flag_key,
        attempt,
        actor.name,
        actor.request_id,
    )
    return Outcome.of(200, Cancelled(schedule=to_schedule(after), attempt=attempt))


def wake_now(conn: DictConnection, env: Env, row: Row, attempt: int, due: datetime) -> None:
    """Queue a wake-up for ``attempt`` due at ``due`` on the schedule's lane."""
    event = ScheduleDue(
        schedule_id=row["id"],
        flag_key=row["flag_key"],
        scheduled_at=row["scheduled_at"],
        priority=Priority(row["priority"]),
        dispatched_at=due,
    )
    topic = env.layout.priority if event.priority is Priority.CRITICAL else env.layout.due
    headers = RecordHeaders(attempt=attempt, due_ms=to_epoch_ms(due)).encode()
    outbox.enqueue(conn, topic, row["flag_key"].encode(), event.model_dump_json().encode(), headers)


def reopen_dead(conn: DictConnection, env: Env, row: Row) -> tuple[Row, int, int]:
    """Re-open a dead (locked) row with one more attempt, not counted against its
    ``max_retries`` (its budget grows by one); returns (row, attempt, max_retries)."""
    attempt = int(row["retry_count"]) + 1
    budget = max(env.policy_of(row).max_retries, attempt - 2) + 1
    due = _now_ms()
    after = conn.execute(
        "UPDATE flag_schedules SET status = 'retrying', next_retry_at = %s, max_retries = %s,"
        " finished_at = NULL, finished_attempt = NULL, dispatched_at = now(), updated_at = now()"
        " WHERE id = %s RETURNING *",
        (due, budget, row["id"]),
    ).fetchone()
    assert after is not None
    wake_now(conn, env, after, attempt, due)
    return after, attempt, budget


def flag_of(conn: DictConnection, flag_key: str) -> Row | None:
    """The flag row (unlocked: only read for a prediction)."""
    return conn.execute("SELECT * FROM feature_flags WHERE key = %s", (flag_key,)).fetchone()


def retry(conn: DictConnection, env: Env, actor: Actor, flag_key: str, schedule_id: int) -> Outcome:
    """Manual retry: a retrying schedule runs its next attempt now; a dead one re-opens."""
    actor.check_flag(flag_key)
    row = find_schedule(conn, flag_key, schedule_id, lock=True)
    if row["status"] == "retrying":
        attempt, due = int(row["retry_count"]) + 1, _now_ms()
        after = conn.execute(
            "UPDATE flag_schedules SET next_retry_at = %s, dispatched_at = now(),"
            " updated_at = now() WHERE id = %s RETURNING *",
            (due, schedule_id),
        ).fetchone()
        assert after is not None
        wake_now(conn, env, after, attempt, due)
        action, budget = RetryAction.RUN_NOW, env.policy_of(after).max_retries
    elif row["status"] == "dead":
        after, attempt, budget = reopen_dead(conn, env, row)
        action = RetryAction.REOPENED
    else:
        raise StateConflict(
            f"schedule {schedule_id} is {row['status']}: only retrying or dead schedules retry"
        )
    audit.record(
        conn,
        actor,
        "schedule.retry",
        "schedule",
        [schedule_id],
        before=_json(row),
        after=_json(after),
    )
    log.info(
        "schedule=%s flag=%s attempt=%s %s by %s request=%s",
        schedule_id,
        flag_key,
        attempt,
        action.value,
        actor.name,
        actor.request_id,
    )
    retried = Retried(
        action=action,
        attempt=attempt,
        max_retries=budget,
        expected_superseded=would_supersede(flag_of(conn, flag_key), after),
        schedule=to_schedule(after),
    )
    return Outcome.of(200, retried)
