"""One attempt of one schedule, in one PostgreSQL transaction.

The row is the truth. The transaction locks the schedule row, decides from its
state and the attempt rows whether this record is new work, a replay of an
attempt already recorded (its Kafka side effects were lost, so they are
redone), or stale; then applies the update inside a savepoint, so a failed
apply rolls back only itself and the attempt's bookkeeping still commits with
it. Bookkeeping is keyed by (schedule, attempt).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from pydantic import ValidationError

from flagsched.consumer.classify import classify
from flagsched.consumer.decode import Delivery
from flagsched.consumer.outcome import AttemptResult, Outcome
from flagsched.errors import FlagNotFound, InvalidUpdate, ScheduleNotFound
from flagsched.retry.policy import (
    PolicyOverride,
    RetryPolicy,
    is_exhausted,
    next_attempt_at,
    policy_for,
    seed_for,
)
from flagsched.schemas.error_classes import Disposition
from flagsched.schemas.events import to_epoch_ms
from flagsched.schemas.headers import DeadLetterReason, truncate_utf8
from flagsched.schemas.updates import FlagUpdate

Row = dict[str, Any]
TERMINAL = {"applied", "dead", "superseded", "cancelled"}


@dataclass(frozen=True)
class AttemptContext:
    """Everything an attempt needs besides the record."""

    policy: RetryPolicy
    worker_id: str
    lock_timeout_ms: int
    statement_timeout_ms: int
    error_message_max_bytes: int = 1024
    trace_id: str | None = None


class _Superseded(Exception):
    def __init__(self, by: int) -> None:
        super().__init__(f"superseded by schedule {by}")
        self.by = by


def run_attempt(
    conn: psycopg.Connection[Row], delivery: Delivery, ctx: AttemptContext
) -> AttemptResult:
    """Execute (or replay) attempt ``delivery.headers.attempt`` of the schedule.

    Raises psycopg errors of the infrastructure class (the caller pauses in
    place); every other failure is recorded and returned as an outcome.
    """
    ev, n = delivery.event, delivery.headers.attempt
    started = datetime.now(UTC)
    with conn.transaction():
        _set_local(conn, "statement_timeout", ctx.statement_timeout_ms)
        # The schedule row may be briefly locked by a dispatcher publishing it:
        # wait for it (statement timeout) instead of burning an attempt.
        row = conn.execute(
            "SELECT * FROM flag_schedules WHERE id = %s FOR UPDATE", (ev.schedule_id,)
        ).fetchone()
        if row is None:
            raise ScheduleNotFound(f"schedule {ev.schedule_id} does not exist")
        recorded = conn.execute(
            "SELECT * FROM schedule_retry_attempts WHERE schedule_id = %s AND attempt = %s",
            (ev.schedule_id, n),
        ).fetchone()
        if recorded is not None:
            if _ms(recorded["due_at"]) != delivery.headers.due_ms:
                return AttemptResult(Outcome.DROP, n, ev.schedule_id, ev.flag_key)
            return _replay(conn, row, recorded)
        if row["status"] in ("applied", "dead", "superseded") or n != row["retry_count"] + 1:
            return AttemptResult(Outcome.DROP, n, ev.schedule_id, ev.flag_key)
        # A wake-up for another due time than the row's (edited or re-armed since it was
        # sent, e.g. after pre-dispatch) is stale: the row's own wake-up does the work.
        expected = row["scheduled_at"] if n == 1 else row["next_retry_at"]
        if expected is None or _ms(expected) != delivery.headers.due_ms:
            return AttemptResult(Outcome.DROP, n, ev.schedule_id, ev.flag_key)
        if row["status"] == "cancelled":
            return _finish(conn, row, delivery, ctx, started, Outcome.CANCELLED)
        _set_local(conn, "lock_timeout", ctx.lock_timeout_ms)
        try:
            with conn.transaction():  # savepoint: a failed apply rolls back only itself
                version = _apply_update(conn, row, n)
        except _Superseded as sup:
            return _finish(conn, row, delivery, ctx, started, Outcome.SUPERSEDED, by=sup.by)
        except (psycopg.Error, FlagNotFound, InvalidUpdate) as exc:
            verdict = classify(exc)
            if verdict.disposition is Disposition.PAUSE:
                raise
            return _fail(
                conn,
                row,
                delivery,
                ctx,
                started,
                exc,
                verdict.error_class.value,
                permanent=verdict.disposition is Disposition.PERMANENT,
            )
        return _finish(conn, row, delivery, ctx, started, Outcome.APPLIED, version=version)


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else to_epoch_ms(moment)


def _set_local(conn: psycopg.Connection[Row], name: str, ms: int) -> None:
    conn.execute(sql.SQL("SET LOCAL {} = {}").format(sql.Identifier(name), sql.Literal(f"{ms}ms")))


def _apply_update(conn: psycopg.Connection[Row], row: Row, attempt: int) -> int:
    """Change the flag; return its new version. Raises on any reason not to."""
    flag = conn.execute(
        "SELECT * FROM feature_flags WHERE key = %s FOR UPDATE", (row["flag_key"],)
    ).fetchone()
    if flag is None:
        raise FlagNotFound(f"flag {row['flag_key']!r} does not exist")
    last_at, last_id = flag["last_scheduled_at"], flag["last_schedule_id"]
    if last_at is not None and (last_at, last_id) > (row["scheduled_at"], row["id"]):
        raise _Superseded(int(last_id))
    try:
        update = FlagUpdate.model_validate(row["updates"]).fields()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidUpdate(
            f"invalid update for flag {row['flag_key']!r}: {where}: {first['msg']}"
        ) from exc
    if not update:
        raise InvalidUpdate(f"update for flag {row['flag_key']!r} changes nothing")
    before = {k: flag[k] for k in ("enabled", "rollout_percentage", "config")}
    sets = [sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in update]
    params = {k: (json.dumps(v) if k == "config" else v) for k, v in update.items()}
    after = conn.execute(
        sql.SQL(
            "UPDATE feature_flags SET {}, version = version + 1, last_schedule_id = %(sid)s,"
            " last_scheduled_at = %(sat)s, updated_at = now() WHERE key = %(key)s"
            " RETURNING enabled, rollout_percentage, config, version"
        ).format(sql.SQL(", ").join(sets)),
        {**params, "sid": row["id"], "sat": row["scheduled_at"], "key": row["flag_key"]},
    ).fetchone()
    assert after is not None
    version = int(after.pop("version"))
    conn.execute(
        "INSERT INTO flag_change_log (flag_key, schedule_id, attempt, version, before, after)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (row["flag_key"], row["id"], attempt, version, json.dumps(before), json.dumps(after)),
    )
    return version


def _policy(ctx: AttemptContext, row: Row, error_class: str) -> RetryPolicy:
    override = PolicyOverride.model_validate(row["retry_policy"] or {})
    if row["max_retries"] is not None:
        override = override.model_copy(update={"max_retries": row["max_retries"]})
    return policy_for(ctx.policy, override, error_class)


def _fail(
    conn: psycopg.Connection[Row],
    row: Row,
    delivery: Delivery,
    ctx: AttemptContext,
    started: datetime,
    exc: BaseException,
    error_class: str,
    *,
    permanent: bool,
) -> AttemptResult:
    n = delivery.headers.attempt
    message = truncate_utf8(f"{type(exc).__name__}: {exc}".strip(), ctx.error_message_max_bytes)
    first_failed = row["first_failed_at"] or started
    policy = _policy(ctx, row, error_class)
    if permanent or is_exhausted(policy, n):
        reason = DeadLetterReason.PERMANENT if permanent else DeadLetterReason.EXHAUSTED
        return _finish(
            conn,
            row,
            delivery,
            ctx,
            started,
            Outcome.DEAD,
            error_class=error_class,
            message=message,
            reason=reason,
            first_failed=first_failed,
        )
    due = next_attempt_at(policy, n, seed_for(row["id"], n + 1), datetime.now(UTC))
    return _finish(
        conn,
        row,
        delivery,
        ctx,
        started,
        Outcome.RETRY,
        error_class=error_class,
        message=message,
        next_at=due,
        first_failed=first_failed,
    )


_STATUS = {
    Outcome.APPLIED: "applied",
    Outcome.RETRY: "retrying",
    Outcome.DEAD: "dead",
    Outcome.SUPERSEDED: "superseded",
    Outcome.CANCELLED: "cancelled",
}


def _finish(
    conn: psycopg.Connection[Row],
    row: Row,
    delivery: Delivery,
    ctx: AttemptContext,
    started: datetime,
    outcome: Outcome,
    *,
    version: int | None = None,
    by: int | None = None,
    error_class: str | None = None,
    message: str | None = None,
    reason: DeadLetterReason | None = None,
    next_at: datetime | None = None,
    first_failed: datetime | None = None,
) -> AttemptResult:
    """Record the attempt row and the schedule's new state in the open transaction."""
    n, coords = delivery.headers.attempt, delivery.coords
    due_at = datetime.fromtimestamp(delivery.headers.due_ms / 1000, UTC)
    lateness_ms = (started - due_at).total_seconds() * 1000
    terminal = outcome is not Outcome.RETRY
    conn.execute(
        "UPDATE flag_schedules SET status = %(status)s,"
        " retry_count = CASE WHEN %(failed)s THEN %(n)s ELSE retry_count END,"
        " next_retry_at = %(next_at)s,"
        " last_error = COALESCE(%(msg)s, last_error),"
        " last_error_class = COALESCE(%(cls)s, last_error_class),"
        " first_failed_at = COALESCE(first_failed_at, %(ff)s),"
        " finished_at = CASE WHEN %(terminal)s THEN now() END,"
        " finished_attempt = CASE WHEN %(terminal)s THEN %(n)s END,"
        " superseded_by = %(by)s, updated_at = now() WHERE id = %(id)s",
        {
            "status": _STATUS[outcome],
            "failed": error_class is not None,
            "n": n,
            "next_at": next_at,
            "msg": message,
            "cls": error_class,
            "ff": first_failed,
            "terminal": terminal,
            "by": by,
            "id": row["id"],
        },
    )
    conn.execute(
        "INSERT INTO schedule_retry_attempts (schedule_id, attempt, started_at, finished_at,"
        " due_at, lateness_ms, outcome, error_class, error_message, dlt_reason, next_attempt_at,"
        " topic, kafka_partition, kafka_offset, worker, trace_id)"
        " VALUES (%s, %s, %s, now(), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            row["id"],
            n,
            started,
            due_at,
            lateness_ms,
            _STATUS[outcome] if outcome is not Outcome.RETRY else "retry",
            error_class,
            message,
            reason.value if reason else None,
            next_at,
            coords.topic,
            coords.partition,
            coords.offset,
            ctx.worker_id,
            ctx.trace_id,
        ),
    )
    return AttemptResult(
        outcome,
        n,
        row["id"],
        row["flag_key"],
        row["scheduled_at"],
        error_class,
        message,
        reason,
        next_at,
        first_failed if error_class else row["first_failed_at"],
        version,
        by,
        due_ms=delivery.headers.due_ms,
        lateness_ms=lateness_ms,
    )


def _replay(conn: psycopg.Connection[Row], row: Row, rec: Row) -> AttemptResult:
    """An attempt already recorded: redo its Kafka side effects, unless a later attempt exists."""
    n = int(rec["attempt"])
    later = conn.execute(
        "SELECT 1 FROM schedule_retry_attempts WHERE schedule_id = %s AND attempt > %s LIMIT 1",
        (row["id"], n),
    ).fetchone()
    if later is not None:
        return AttemptResult(Outcome.DROP, n, row["id"], row["flag_key"])
    outcome = {v: k for k, v in _STATUS.items()}.get(rec["outcome"], Outcome.RETRY)
    version = None
    if outcome is Outcome.APPLIED:
        got = conn.execute(
            "SELECT version FROM flag_change_log WHERE schedule_id = %s", (row["id"],)
        ).fetchone()
        version = int(got["version"]) if got else None
    reason = DeadLetterReason(rec["dlt_reason"]) if rec["dlt_reason"] else None
    due_ms = int(rec["due_at"].timestamp() * 1000) if rec["due_at"] else None
    return AttemptResult(
        outcome,
        n,
        row["id"],
        row["flag_key"],
        row["scheduled_at"],
        rec["error_class"],
        rec["error_message"],
        reason,
        rec["next_attempt_at"],
        row["first_failed_at"],
        version,
        row["superseded_by"],
        due_ms=due_ms,
        replay=True,
    )
