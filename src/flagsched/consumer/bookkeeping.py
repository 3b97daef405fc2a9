"""The bookkeeping of an attempt, keyed by (schedule, attempt): the attempt row and
the schedule's new state, written in the attempt's transaction; and the replay of
an attempt already recorded, whose Kafka side effects must be sent again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from flagsched.consumer.decode import Delivery
from flagsched.consumer.outcome import AttemptResult, Outcome
from flagsched.retry.policy import (
    PolicyOverride,
    RetryPolicy,
    is_exhausted,
    next_attempt_at,
    policy_for,
    seed_for,
)
from flagsched.schemas.headers import DeadLetterReason, truncate_utf8

Row = dict[str, Any]


@dataclass(frozen=True)
class AttemptContext:
    """Everything an attempt needs besides the record."""

    policy: RetryPolicy
    worker_id: str
    lock_timeout_ms: int
    statement_timeout_ms: int
    error_message_max_bytes: int = 1024
    trace_id: str | None = None


def _policy(ctx: AttemptContext, row: Row, error_class: str) -> RetryPolicy:
    override = PolicyOverride.model_validate(row["retry_policy"] or {})
    if row["max_retries"] is not None:
        override = override.model_copy(update={"max_retries": row["max_retries"]})
    return policy_for(ctx.policy, override, error_class)


def record_failure(
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
        return record_outcome(
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
    return record_outcome(
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


def record_outcome(
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
    # One round trip: the schedule's new state and its attempt row.
    conn.execute(
        "WITH s AS (UPDATE flag_schedules SET status = %(status)s,"
        " retry_count = CASE WHEN %(failed)s THEN %(n)s ELSE retry_count END,"
        " next_retry_at = %(next_at)s,"
        " last_error = COALESCE(%(msg)s, last_error),"
        " last_error_class = COALESCE(%(cls)s, last_error_class),"
        " first_failed_at = COALESCE(first_failed_at, %(ff)s),"
        " finished_at = CASE WHEN %(terminal)s THEN now() END,"
        " finished_attempt = CASE WHEN %(terminal)s THEN %(n)s END,"
        " superseded_by = %(by)s, updated_at = now() WHERE id = %(id)s RETURNING id)"
        " INSERT INTO schedule_retry_attempts (schedule_id, attempt, started_at, finished_at,"
        " due_at, lateness_ms, outcome, error_class, error_message, dlt_reason, next_attempt_at,"
        " topic, kafka_partition, kafka_offset, worker, trace_id)"
        " SELECT s.id, %(n)s, %(started)s, now(), %(due_at)s, %(lateness)s, %(outcome)s,"
        " %(cls)s, %(msg)s, %(reason)s, %(next_at)s, %(topic)s, %(part)s, %(off)s, %(worker)s,"
        " %(trace)s FROM s",
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
            "started": started,
            "due_at": due_at,
            "lateness": lateness_ms,
            "outcome": _STATUS[outcome] if outcome is not Outcome.RETRY else "retry",
            "reason": reason.value if reason else None,
            "topic": coords.topic,
            "part": coords.partition,
            "off": coords.offset,
            "worker": ctx.worker_id,
            "trace": delivery.trace_id or ctx.trace_id,
        },
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


def replay(conn: psycopg.Connection[Row], row: Row, rec: Row) -> AttemptResult:
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
