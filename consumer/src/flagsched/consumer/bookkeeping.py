"""The bookkeeping of an attempt, keyed by (schedule, attempt): the attempt row and
the schedule's new state, planned per attempt and written in the attempt's
transaction (any number of attempts in one statement); and the replay of an
attempt already recorded, whose Kafka side effects must be sent again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from pydantic import ValidationError

from flagsched.consumer.classify import Classification
from flagsched.consumer.decode import Delivery
from flagsched.consumer.outcome import AttemptResult, Outcome
from flagsched.runtime.errors import InvalidRetryPolicy
from flagsched.schemas.error_classes import ErrorClass
from flagsched.schemas.error_message import ERROR_MESSAGE_MAX_BYTES, truncate_utf8
from flagsched.schemas.headers import DeadLetterReason
from flagsched.schemas.retry.policy import (
    MAX_RETRIES,
    PolicyOverride,
    RetryPolicy,
    is_exhausted,
    planned_attempt_at,
    policy_for,
)

Row = dict[str, Any]


@dataclass(frozen=True)
class AttemptContext:
    """Everything an attempt needs besides the record."""

    policy: RetryPolicy
    worker_id: str
    lock_timeout_ms: int
    statement_timeout_ms: int
    error_message_max_bytes: int = ERROR_MESSAGE_MAX_BYTES
    trace_id: str | None = None


def _policy(ctx: AttemptContext, row: Row, error_class: str) -> RetryPolicy:
    """The schedule's effective policy; :class:`InvalidRetryPolicy` if its own does not fit."""
    try:
        override = PolicyOverride.model_validate(row["retry_policy"] or {})
        if row["max_retries"] is not None:
            # The column allows any count; the model bounds it (the chain replay is O(n)).
            retries = min(int(row["max_retries"]), MAX_RETRIES)
            override = override.model_copy(update={"max_retries": retries})
        return policy_for(ctx.policy, override, error_class)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "retry_policy"
        raise InvalidRetryPolicy(f"retry_policy: {where}: {first['msg']}") from exc


@dataclass(frozen=True)
class Planned:
    """An attempt's outcome and the row :func:`write_outcomes` records for it."""

    result: AttemptResult
    params: dict[str, Any]


def plan_failure(
    row: Row,
    delivery: Delivery,
    ctx: AttemptContext,
    started: datetime,
    exc: BaseException,
    verdict: Classification,
) -> Planned:
    """A failed attempt: dead (permanent or exhausted) or a retry at its backoff.

    ``verdict`` is the error table's (consumer/classify.py) on ``exc``. A retryable
    failure of a schedule whose own ``retry_policy`` does not fit the model (a row
    from before migration 0005, or written around the admin API) cannot be retried
    by it: it is dead with ``invalid_retry_policy``, the message naming both.
    """
    n = delivery.headers.attempt
    text = f"{type(exc).__name__}: {exc}".strip()
    error_class, permanent = verdict.error_class.value, verdict.permanent
    first_failed = row["first_failed_at"] or started
    policy: RetryPolicy | None = None
    if not permanent:
        try:
            policy = _policy(ctx, row, error_class)
        except InvalidRetryPolicy as bad:
            permanent = True
            error_class, text = ErrorClass.INVALID_RETRY_POLICY.value, f"{bad} (after {text})"
    message = truncate_utf8(text, ctx.error_message_max_bytes)
    now = datetime.now(UTC)
    exhausted = policy is None or is_exhausted(policy, n, first_failed_at=first_failed, now=now)
    if permanent or exhausted or policy is None:
        reason = DeadLetterReason.PERMANENT if permanent else DeadLetterReason.EXHAUSTED
        return plan_outcome(
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
    due = planned_attempt_at(policy, row["id"], n, now)
    return plan_outcome(
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


def plan_outcome(
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
) -> Planned:
    """The attempt row and the schedule's new state for one outcome (nothing written)."""
    n, coords = delivery.headers.attempt, delivery.coords
    due_at = datetime.fromtimestamp(delivery.headers.due_ms / 1000, UTC)
    lateness_ms = (started - due_at).total_seconds() * 1000
    params = {
        "id": row["id"],
        "status": _STATUS[outcome],
        "failed": error_class is not None,
        "n": n,
        "next_at": next_at,
        "msg": message,
        "cls": error_class,
        "ff": first_failed,
        "terminal": outcome is not Outcome.RETRY,
        "by": by,
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
        "with": delivery.applied_with,
    }
    result = AttemptResult(
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
    return Planned(result, params)


# (parameter, SQL array type) of one planned row, in the order of _WRITE's unnest.
_COLUMNS = (
    ("id", "bigint"),
    ("status", "text"),
    ("failed", "boolean"),
    ("n", "integer"),
    ("next_at", "timestamptz"),
    ("msg", "text"),
    ("cls", "text"),
    ("ff", "timestamptz"),
    ("terminal", "boolean"),
    ("by", "bigint"),
    ("started", "timestamptz"),
    ("due_at", "timestamptz"),
    ("lateness", "double precision"),
    ("outcome", "text"),
    ("reason", "text"),
    ("topic", "text"),
    ("part", "integer"),
    ("off", "bigint"),
    ("worker", "text"),
    ("trace", "text"),
    ("with", "bigint"),
)

# One round trip for any number of attempts (schedule ids must be distinct): each
# schedule's new state and its attempt row. Arrays go in binary (%b): psycopg dumps a
# 500-row batch about 4x faster than as text, and dumping was the worker's top CPU cost.
_WRITE = (
    "WITH v AS (SELECT * FROM unnest("
    + ", ".join(f"%({name})b::{kind}[]" for name, kind in _COLUMNS)
    + ") AS v("
    + ", ".join(f"c_{name}" for name, _ in _COLUMNS)
    + ")),"
    " s AS (UPDATE flag_schedules f SET status = v.c_status,"
    " retry_count = CASE WHEN v.c_failed THEN v.c_n ELSE f.retry_count END,"
    " next_retry_at = v.c_next_at,"
    " last_error = COALESCE(v.c_msg, f.last_error),"
    " last_error_class = COALESCE(v.c_cls, f.last_error_class),"
    " first_failed_at = COALESCE(f.first_failed_at, v.c_ff),"
    " finished_at = CASE WHEN v.c_terminal THEN %(finished)s::timestamptz END,"
    " finished_attempt = CASE WHEN v.c_terminal THEN v.c_n END,"
    " superseded_by = v.c_by, updated_at = now() FROM v WHERE f.id = v.c_id RETURNING f.id)"
    " INSERT INTO schedule_retry_attempts (schedule_id, attempt, started_at, finished_at,"
    " due_at, lateness_ms, outcome, error_class, error_message, dlt_reason, next_attempt_at,"
    " topic, kafka_partition, kafka_offset, worker, trace_id, applied_with)"
    " SELECT v.c_id, v.c_n, v.c_started, %(finished)s::timestamptz, v.c_due_at,"
    " v.c_lateness, v.c_outcome,"
    " v.c_cls, v.c_msg, v.c_reason, v.c_next_at, v.c_topic, v.c_part, v.c_off, v.c_worker,"
    " v.c_trace, v.c_with FROM v JOIN s ON s.id = v.c_id"
)


def write_outcomes(conn: psycopg.Connection[Row], planned: Sequence[Planned]) -> None:
    """Record planned attempts in the open transaction, in one statement."""
    if not planned:
        return
    # started_at and finished_at both come from this worker's clock: now() is the
    # database's, and the transaction's start, so it came before every started_at.
    params: dict[str, Any] = {name: [p.params[name] for p in planned] for name, _ in _COLUMNS}
    params["finished"] = datetime.now(UTC)
    conn.execute(_WRITE, params)


def record(conn: psycopg.Connection[Row], planned: Planned) -> AttemptResult:
    """Write one planned attempt (:func:`plan_outcome`, :func:`plan_failure`); its result."""
    write_outcomes(conn, [planned])
    return planned.result


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
