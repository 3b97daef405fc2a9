"""The bookkeeping of an attempt, keyed by (schedule, attempt): the attempt row and
the schedule's new state, planned per attempt and written in the attempt's
transaction (any number of attempts in one statement); and the replay of an
attempt already recorded, whose Kafka side effects must be sent again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypedDict, assert_never

import psycopg
from pydantic import ValidationError

from flagsched.consumer.classify import Classification
from flagsched.consumer.decode import Delivery
from flagsched.consumer.results import (
    Applied,
    Cancelled,
    DeadLettered,
    Dropped,
    Outcome,
    Recorded,
    RetryScheduled,
    Superseded,
)
from flagsched.runtime.errors import InvalidRetryPolicy
from flagsched.schemas.error_classes import ErrorClass
from flagsched.schemas.error_message import ERROR_MESSAGE_MAX_BYTES, truncate_utf8
from flagsched.schemas.events import Priority
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

    result: Recorded
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
    common = _common(row, delivery, started)
    if permanent or exhausted or policy is None:
        reason = DeadLetterReason.PERMANENT if permanent else DeadLetterReason.EXHAUSTED
        dead = DeadLettered(
            **common,
            error_class=error_class,
            error_message=message,
            reason=reason,
            first_failure_at=first_failed,
            due_ms=delivery.headers.due_ms,
        )
        return _planned(dead, delivery, ctx, started)
    retry = RetryScheduled(
        **common,
        error_class=error_class,
        error_message=message,
        next_attempt_at=planned_attempt_at(policy, row["id"], n, now),
        first_failure_at=first_failed,
    )
    return _planned(retry, delivery, ctx, started)


def plan_applied(
    row: Row, delivery: Delivery, ctx: AttemptContext, started: datetime, version: int
) -> Planned:
    """The schedule's change took effect as the flag's ``version``."""
    result = Applied(**_common(row, delivery, started), flag_version=version)
    return _planned(result, delivery, ctx, started)


def plan_superseded(
    row: Row, delivery: Delivery, ctx: AttemptContext, started: datetime, by: int
) -> Planned:
    """Newer schedules (the newest: ``by``) set every field this one sets."""
    result = Superseded(**_common(row, delivery, started), superseded_by=by)
    return _planned(result, delivery, ctx, started)


def plan_cancelled(row: Row, delivery: Delivery, ctx: AttemptContext, started: datetime) -> Planned:
    """The schedule was cancelled before its attempt."""
    return _planned(Cancelled(**_common(row, delivery, started)), delivery, ctx, started)


class _Common(TypedDict):
    attempt: int
    schedule_id: int
    flag_key: str
    scheduled_at: datetime
    priority: Priority
    lateness_ms: float


def _common(row: Row, delivery: Delivery, started: datetime) -> _Common:
    """What every recorded outcome of this attempt says."""
    return _Common(
        attempt=delivery.headers.attempt,
        schedule_id=row["id"],
        flag_key=row["flag_key"],
        scheduled_at=row["scheduled_at"],
        priority=Priority(row["priority"]),
        lateness_ms=(started - _due_at(delivery)).total_seconds() * 1000,
    )


def _due_at(delivery: Delivery) -> datetime:
    return datetime.fromtimestamp(delivery.headers.due_ms / 1000, UTC)


_STATUS = {
    Outcome.APPLIED: "applied",
    Outcome.RETRY: "retrying",
    Outcome.DEAD: "dead",
    Outcome.SUPERSEDED: "superseded",
    Outcome.CANCELLED: "cancelled",
}


def _planned(
    result: Recorded, delivery: Delivery, ctx: AttemptContext, started: datetime
) -> Planned:
    """The attempt row and the schedule's new state for one outcome (nothing written)."""
    next_at: datetime | None = None
    message: str | None = None
    error_class: str | None = None
    first_failed: datetime | None = None
    by: int | None = None
    reason: DeadLetterReason | None = None
    match result:
        case RetryScheduled():
            next_at, first_failed = result.next_attempt_at, result.first_failure_at
            error_class, message = result.error_class, result.error_message
        case DeadLettered():
            first_failed, reason = result.first_failure_at, result.reason
            error_class, message = result.error_class, result.error_message
        case Superseded():
            by = result.superseded_by
        case Applied() | Cancelled():
            pass
        case _:
            assert_never(result)
    coords, status = delivery.coords, _STATUS[result.outcome]
    params = {
        "id": result.schedule_id,
        "status": status,
        "failed": error_class is not None,
        "n": result.attempt,
        "next_at": next_at,
        "msg": message,
        "cls": error_class,
        "ff": first_failed,
        "terminal": result.outcome.is_terminal,
        "by": by,
        "started": started,
        "due_at": _due_at(delivery),
        "lateness": result.lateness_ms,
        "outcome": "retry" if isinstance(result, RetryScheduled) else status,
        "reason": reason.value if reason else None,
        "topic": coords.topic,
        "part": coords.partition,
        "off": coords.offset,
        "worker": ctx.worker_id,
        "trace": delivery.trace_id or ctx.trace_id,
        "with": delivery.applied_with,
    }
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


def record(conn: psycopg.Connection[Row], planned: Planned) -> Recorded:
    """Write one planned attempt (``plan_*``, :func:`plan_failure`); its result."""
    write_outcomes(conn, [planned])
    return planned.result


def replay(conn: psycopg.Connection[Row], row: Row, rec: Row) -> Recorded | Dropped:
    """An attempt already recorded: redo its Kafka side effects, unless a later attempt exists."""
    n = int(rec["attempt"])
    later = conn.execute(
        "SELECT 1 FROM schedule_retry_attempts WHERE schedule_id = %s AND attempt > %s LIMIT 1",
        (row["id"], n),
    ).fetchone()
    if later is not None:
        return Dropped(
            attempt=n,
            schedule_id=row["id"],
            flag_key=row["flag_key"],
            why="a later attempt is recorded",
        )
    common = {
        "attempt": n,
        "schedule_id": row["id"],
        "flag_key": row["flag_key"],
        "scheduled_at": row["scheduled_at"],
        "priority": Priority(row["priority"]),
        "replay": True,
    }
    due_ms = int(rec["due_at"].timestamp() * 1000) if rec["due_at"] else None
    # The attempt row's outcome column allows these five (migration 0001); a retry row
    # says "retry".
    match rec["outcome"]:
        case "applied":
            got = conn.execute(
                "SELECT version FROM flag_change_log WHERE schedule_id = %s", (row["id"],)
            ).fetchone()
            return Applied(**common, flag_version=int(got["version"]) if got else None)
        case "superseded":
            return Superseded(**common, superseded_by=row["superseded_by"])
        case "cancelled":
            return Cancelled(**common)
        case "dead":
            return DeadLettered(
                **common,
                error_class=rec["error_class"],
                error_message=rec["error_message"],
                # The worker always records a reason; a row without one goes out as
                # the dead-letter topic has always labelled a reasonless record.
                reason=DeadLetterReason(rec["dlt_reason"] or DeadLetterReason.POISON),
                first_failure_at=row["first_failed_at"],
                due_ms=due_ms,
            )
        case _:
            return RetryScheduled(
                **common,
                error_class=rec["error_class"],
                error_message=rec["error_message"],
                next_attempt_at=rec["next_attempt_at"],
                first_failure_at=row["first_failed_at"],
            )
