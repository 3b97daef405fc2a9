"""A batch that failed for a reason of its own, redone one schedule at a time.

consumer/apply.py runs a poll in one transaction. An exception the error table
(consumer/classify.py) does not class as ``pause`` is not the database's
fault: it belongs to one schedule whose row, record or update is odd in a way
no savepoint caught. Then each schedule runs again in a transaction of its own;
the one that fails has its attempt recorded as failed (retried or dead-lettered
as its class says) in a further transaction, and every other one applies. Only
a ``pause`` error stops the poll: the schedules not yet done wait in place.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import psycopg

from flagsched.consumer.apply import run_batch, run_order
from flagsched.consumer.attempt import SCHEDULE_AND_ATTEMPT, set_local, triage
from flagsched.consumer.bookkeeping import AttemptContext, Row, plan_failure, record
from flagsched.consumer.classify import Classification, classify
from flagsched.consumer.decode import Delivery
from flagsched.consumer.results import Attempted, Paused, Poison
from flagsched.schemas.headers import DeadLetterReason, truncate_utf8

log = logging.getLogger(__name__)


def paused(delivery: Delivery, verdict: Classification) -> Paused:
    """The record waits in place: no attempt is used up (infrastructure)."""
    ev = delivery.event
    return Paused(
        attempt=delivery.headers.attempt,
        schedule_id=ev.schedule_id,
        flag_key=ev.flag_key,
        error_class=verdict.error_class.value,
    )


def run_isolated(
    conn: psycopg.Connection[Row], deliveries: Sequence[Delivery], ctx: AttemptContext
) -> list[Attempted | Paused]:
    """The outcome of every delivery (in the order given), each in its own transaction."""
    results: dict[int, Attempted | Paused] = {}
    stopped: Classification | None = None
    for i in run_order(deliveries):
        d = deliveries[i]
        if stopped is not None:
            results[i] = paused(d, stopped)
            continue
        try:
            results[i] = run_batch(conn, [d], ctx)[0]
        except Exception as exc:
            verdict = classify(exc)
            if verdict.pauses:
                stopped = verdict
                results[i] = paused(d, verdict)
                continue
            try:
                results[i] = _fail(conn, d, ctx, exc, verdict)
            except Exception as again:
                if classify(again).pauses:
                    stopped = classify(again)
                    results[i] = paused(d, stopped)
                else:
                    results[i] = _unrecorded(d, ctx, verdict, again)
    return [results[i] for i in range(len(deliveries))]


def _fail(
    conn: psycopg.Connection[Row],
    d: Delivery,
    ctx: AttemptContext,
    exc: Exception,
    verdict: Classification,
) -> Attempted:
    """Record the attempt as failed with ``exc``: a retry, or dead, as the table says."""
    ev = d.event
    log.warning(
        "schedule=%s flag=%s attempt=%s failed outside its savepoint (%s): %s",
        ev.schedule_id,
        ev.flag_key,
        d.headers.attempt,
        verdict.error_class,
        type(exc).__name__,
    )
    started = datetime.now(UTC)
    with conn.transaction():
        set_local(conn, "statement_timeout", ctx.statement_timeout_ms)
        found = conn.execute(SCHEDULE_AND_ATTEMPT, (d.headers.attempt, ev.schedule_id)).fetchone()
        row = triage(conn, d, found)
        if not isinstance(row, dict):
            return row
        return record(conn, plan_failure(row, d, ctx, started, exc, verdict))


def _unrecorded(
    d: Delivery, ctx: AttemptContext, verdict: Classification, again: Exception
) -> Poison:
    """Not even the failure could be recorded: the record alone is dead-lettered (the
    row is untouched; if it is still due, the stuck-row sweep re-sends it)."""
    ev = d.event
    log.error(
        "schedule=%s flag=%s attempt=%s: its failure could not be recorded (%s); dead-lettered",
        ev.schedule_id,
        ev.flag_key,
        d.headers.attempt,
        type(again).__name__,
    )
    return Poison(
        attempt=d.headers.attempt,
        schedule_id=ev.schedule_id,
        flag_key=ev.flag_key,
        error_class=verdict.error_class.value,
        error_message=truncate_utf8(
            f"{type(again).__name__}: {again}", ctx.error_message_max_bytes
        ),
        reason=DeadLetterReason.PERMANENT,
        due_ms=d.headers.due_ms,
    )
