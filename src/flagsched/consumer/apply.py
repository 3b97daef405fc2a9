"""Attempts of schedules in PostgreSQL: a poll's batch, a savepoint per schedule.

The row is the truth. Each attempt locks the schedule row, decides from its
state and the attempt rows whether this record is new work, a replay of an
attempt already recorded (its Kafka side effects were lost, so they are
redone), or stale; then applies the update inside a savepoint, so a failed
apply rolls back only itself and the attempt's bookkeeping still commits with
it. Bookkeeping (consumer/bookkeeping.py) is keyed by (schedule, attempt).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import psycopg
from psycopg import sql
from pydantic import ValidationError

from flagsched.consumer.bookkeeping import (
    AttemptContext,
    Row,
    record_failure,
    record_outcome,
    replay,
)
from flagsched.consumer.classify import classify
from flagsched.consumer.decode import Delivery
from flagsched.consumer.outcome import AttemptResult, Outcome
from flagsched.errors import FlagNotFound, InvalidUpdate, ScheduleNotFound
from flagsched.schemas.error_classes import Disposition, ErrorClass
from flagsched.schemas.events import to_epoch_ms
from flagsched.schemas.headers import DeadLetterReason
from flagsched.schemas.updates import FlagUpdate


class _Superseded(Exception):
    def __init__(self, by: int) -> None:
        super().__init__(f"superseded by schedule {by}")
        self.by = by


def run_batch(
    conn: psycopg.Connection[Row], deliveries: Sequence[Delivery], ctx: AttemptContext
) -> list[AttemptResult]:
    """Attempt a poll's due records in as few transactions as correctness allows.

    One transaction takes every schedule whose flag row it can lock at once
    (``SKIP LOCKED``), a savepoint per schedule, so a schedule that fails rolls back
    only itself. Schedules of flags locked by someone else then run one by one in
    their own transactions, sharing one lock timeout between them: a lock held
    elsewhere never delays the rest of the batch, and several delay the worker by
    one timeout at most. Order is (flag, scheduled_at, id): each flag's
    changes apply in due order, and workers lock flags in the same order, so their
    batches cannot deadlock. An infrastructure error fails the whole call (nothing
    of the open transaction commits) and the caller pauses in place.
    """
    order = sorted(
        range(len(deliveries)),
        key=lambda i: (
            deliveries[i].event.flag_key,
            deliveries[i].event.scheduled_at,
            deliveries[i].event.schedule_id,
        ),
    )
    results: dict[int, AttemptResult] = {}
    with conn.transaction():
        _set_local(conn, "statement_timeout", ctx.statement_timeout_ms)
        # Flag rows this transaction could lock at once; kept current as it updates them.
        flags: dict[str, Row] = {
            str(r["key"]): r
            for r in conn.execute(
                "SELECT * FROM feature_flags WHERE key = ANY(%s) ORDER BY key"
                " FOR UPDATE SKIP LOCKED",
                (sorted({d.event.flag_key for d in deliveries}),),
            )
        }
        for i in order:
            if deliveries[i].event.flag_key in flags:
                results[i] = _attempt(conn, deliveries[i], ctx, flags)
    # The lock waits of one call share one lock timeout: a few flags held elsewhere
    # delay the worker by at most that much, not by the timeout once per schedule.
    budget_ms = float(ctx.lock_timeout_ms)
    for i in order:
        if i not in results:
            wait_ms = max(1, int(min(ctx.lock_timeout_ms, budget_ms)))
            began = time.monotonic()
            with conn.transaction():
                _set_local(conn, "statement_timeout", ctx.statement_timeout_ms)
                results[i] = _attempt(
                    conn, deliveries[i], dataclasses.replace(ctx, lock_timeout_ms=wait_ms), None
                )
            budget_ms -= (time.monotonic() - began) * 1000
    return [results[i] for i in range(len(deliveries))]


def _attempt(
    conn: psycopg.Connection[Row],
    delivery: Delivery,
    ctx: AttemptContext,
    flags: dict[str, Row] | None,
) -> AttemptResult:
    # ScheduleNotFound is raised before anything is written: no savepoint needed.
    try:
        return attempt_in_transaction(conn, delivery, ctx, flags)
    except ScheduleNotFound as exc:
        return AttemptResult(
            Outcome.POISON,
            delivery.headers.attempt,
            delivery.event.schedule_id,
            delivery.event.flag_key,
            error_class=ErrorClass.SCHEDULE_NOT_FOUND.value,
            error_message=str(exc),
            dlt_reason=DeadLetterReason.PERMANENT,
            due_ms=delivery.headers.due_ms,
        )


def attempt_in_transaction(
    conn: psycopg.Connection[Row],
    delivery: Delivery,
    ctx: AttemptContext,
    flags: dict[str, Row] | None = None,
) -> AttemptResult:
    """The body of an attempt, inside the caller's transaction.

    ``flags`` holds flag rows the caller's transaction has locked already (and is
    updated here); without it the flag row is locked here, waiting up to the lock
    timeout.
    """
    ev, n = delivery.event, delivery.headers.attempt
    started = datetime.now(UTC)
    # The schedule row may be briefly locked by a dispatcher publishing it: wait for it
    # (statement timeout) instead of burning an attempt. Its attempt row comes along.
    row = conn.execute(_SCHEDULE_AND_ATTEMPT, (n, ev.schedule_id)).fetchone()
    if row is None:
        raise ScheduleNotFound(f"schedule {ev.schedule_id} does not exist")
    recorded = {k[4:]: row.pop(k) for k in list(row) if k.startswith("rec_")}
    if recorded["attempt"] is not None:
        if _ms(recorded["due_at"]) != delivery.headers.due_ms:
            return AttemptResult(Outcome.DROP, n, ev.schedule_id, ev.flag_key)
        return replay(conn, row, recorded)
    if row["status"] in ("applied", "dead", "superseded") or n != row["retry_count"] + 1:
        return AttemptResult(Outcome.DROP, n, ev.schedule_id, ev.flag_key)
    # A wake-up for another due time than the row's (edited or re-armed since it was
    # sent, e.g. after pre-dispatch) is stale: the row's own wake-up does the work.
    expected = row["scheduled_at"] if n == 1 else row["next_retry_at"]
    if expected is None or _ms(expected) != delivery.headers.due_ms:
        return AttemptResult(Outcome.DROP, n, ev.schedule_id, ev.flag_key)
    if row["status"] == "cancelled":
        return record_outcome(conn, row, delivery, ctx, started, Outcome.CANCELLED)
    if flags is None:
        _set_local(conn, "lock_timeout", ctx.lock_timeout_ms)
    try:
        with conn.transaction():  # savepoint: a failed apply rolls back only itself
            version = _apply_update(conn, row, n, flags)
    except _Superseded as sup:
        return record_outcome(conn, row, delivery, ctx, started, Outcome.SUPERSEDED, by=sup.by)
    except (psycopg.Error, FlagNotFound, InvalidUpdate) as exc:
        verdict = classify(exc)
        if verdict.disposition is Disposition.PAUSE:
            raise
        return record_failure(
            conn,
            row,
            delivery,
            ctx,
            started,
            exc,
            verdict.error_class.value,
            permanent=verdict.disposition is Disposition.PERMANENT,
        )
    return record_outcome(conn, row, delivery, ctx, started, Outcome.APPLIED, version=version)


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else to_epoch_ms(moment)


def _set_local(conn: psycopg.Connection[Row], name: str, ms: int) -> None:
    conn.execute(sql.SQL("SET LOCAL {} = {}").format(sql.Identifier(name), sql.Literal(f"{ms}ms")))


def _apply_update(
    conn: psycopg.Connection[Row], row: Row, attempt: int, flags: dict[str, Row] | None
) -> int:
    """Change the flag; return its new version. Raises on any reason not to."""
    key = row["flag_key"]
    flag = flags.get(key) if flags is not None else None
    if flag is None:
        flag = conn.execute(
            "SELECT * FROM feature_flags WHERE key = %s FOR UPDATE", (key,)
        ).fetchone()
    if flag is None:
        raise FlagNotFound(f"flag {key!r} does not exist")
    last_at, last_id = flag["last_scheduled_at"], flag["last_schedule_id"]
    if last_at is not None and (last_at, last_id) > (row["scheduled_at"], row["id"]):
        raise _Superseded(int(last_id))
    try:
        update = FlagUpdate.model_validate(row["updates"]).fields()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidUpdate(f"invalid update for flag {key!r}: {where}: {first['msg']}") from exc
    if not update:
        raise InvalidUpdate(f"update for flag {key!r} changes nothing")
    before = {k: flag[k] for k in _STATE}
    sets = [sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in update]
    params = {k: (json.dumps(v) if k == "config" else v) for k, v in update.items()}
    # One round trip: the flag's new state and its change-log entry.
    after = conn.execute(
        sql.SQL(
            "WITH f AS (UPDATE feature_flags SET {}, version = version + 1,"
            " last_schedule_id = %(sid)s, last_scheduled_at = %(sat)s, updated_at = now()"
            " WHERE key = %(key)s RETURNING *),"
            " log AS (INSERT INTO flag_change_log"
            " (flag_key, schedule_id, attempt, version, before, after)"
            " SELECT key, %(sid)s, %(n)s, version, %(before)s,"
            " jsonb_build_object('enabled', enabled, 'rollout_percentage', rollout_percentage,"
            " 'config', config) FROM f)"
            " SELECT * FROM f"
        ).format(sql.SQL(", ").join(sets)),
        {
            **params,
            "sid": row["id"],
            "sat": row["scheduled_at"],
            "key": key,
            "n": attempt,
            "before": json.dumps(before),
        },
    ).fetchone()
    assert after is not None
    if flags is not None:
        flags[key] = after
    return int(after["version"])


_STATE = ("enabled", "rollout_percentage", "config")

# The schedule row (locked) with the attempt row this record asks for, if recorded.
_SCHEDULE_AND_ATTEMPT = """
SELECT s.*, a.attempt AS rec_attempt, a.due_at AS rec_due_at, a.outcome AS rec_outcome,
       a.error_class AS rec_error_class, a.error_message AS rec_error_message,
       a.dlt_reason AS rec_dlt_reason, a.next_attempt_at AS rec_next_attempt_at
  FROM flag_schedules s
  LEFT JOIN schedule_retry_attempts a ON a.schedule_id = s.id AND a.attempt = %s
 WHERE s.id = %s
   FOR UPDATE OF s
"""
