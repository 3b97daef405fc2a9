"""Attempts of schedules in PostgreSQL: a poll's batch, a savepoint per schedule.

The row is the truth. Each attempt locks the schedule row, decides from its
state and the attempt rows whether this record is new work, a replay of an
attempt already recorded (its Kafka side effects were lost, so they are
redone), or stale; then applies the update inside a savepoint, so a failed
apply rolls back only itself and the attempt's bookkeeping still commits with
it. Bookkeeping (consumer/bookkeeping.py) is keyed by (schedule, attempt).
"""

from __future__ import annotations

import json
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
    their own transactions, waiting up to the lock timeout: a lock held elsewhere
    never delays the rest of the batch. Order is (flag, scheduled_at, id): each flag's
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
        free = {
            str(r["key"])
            for r in conn.execute(
                "SELECT key FROM feature_flags WHERE key = ANY(%s) ORDER BY key"
                " FOR UPDATE SKIP LOCKED",
                (sorted({d.event.flag_key for d in deliveries}),),
            )
        }
        for i in order:
            if deliveries[i].event.flag_key in free:
                results[i] = _in_savepoint(conn, deliveries[i], ctx)
    for i in order:
        if i not in results:
            with conn.transaction():
                _set_local(conn, "statement_timeout", ctx.statement_timeout_ms)
                results[i] = _in_savepoint(conn, deliveries[i], ctx)
    return [results[i] for i in range(len(deliveries))]


def _in_savepoint(
    conn: psycopg.Connection[Row], delivery: Delivery, ctx: AttemptContext
) -> AttemptResult:
    try:
        with conn.transaction():
            return attempt_in_transaction(conn, delivery, ctx)
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
    conn: psycopg.Connection[Row], delivery: Delivery, ctx: AttemptContext
) -> AttemptResult:
    """The body of an attempt, inside the caller's transaction (or savepoint)."""
    ev, n = delivery.event, delivery.headers.attempt
    started = datetime.now(UTC)
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
    _set_local(conn, "lock_timeout", ctx.lock_timeout_ms)
    try:
        with conn.transaction():  # savepoint: a failed apply rolls back only itself
            version = _apply_update(conn, row, n)
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
