"""A poll's due records attempted in PostgreSQL: as few transactions as correctness allows.

One transaction takes every schedule whose flag row it can lock at once
(``FOR UPDATE SKIP LOCKED``) and applies the batch set-based, each flag's
changes folded into one update (consumer/coalesce.py). When that cannot be
done (a schedule twice in the batch, or a constraint refusing the folded
write) the same transaction applies the batch one schedule at a time, a
savepoint each, so a failure rolls back only itself (consumer/attempt.py).

A flag locked by someone else is not waited for by default
(``apply_lock_timeout_ms = 0``): its schedules fail at once with
lock_contention and retry through the delay tiers, so a lock held elsewhere
never delays the other schedules of the worker. With a lock timeout, they run
one by one in their own transactions after the batch commits, sharing that
timeout between them. Bookkeeping (consumer/bookkeeping.py) is keyed by
(schedule, attempt).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import psycopg

from flagsched.consumer.attempt import attempt_in_transaction, set_local
from flagsched.consumer.bookkeeping import AttemptContext, Row
from flagsched.consumer.coalesce import apply_set
from flagsched.consumer.decode import Delivery
from flagsched.consumer.outcome import AttemptResult


def run_batch(
    conn: psycopg.Connection[Row], deliveries: Sequence[Delivery], ctx: AttemptContext
) -> list[AttemptResult]:
    """The outcome of every delivery, in the order given.

    Order is (flag, scheduled_at, id): each flag's changes apply in due order, and
    workers lock flags and schedules in the same order, so their batches cannot
    deadlock. An infrastructure error fails the whole call (nothing of the open
    transaction commits) and the caller pauses in place.
    """
    order = sorted(
        range(len(deliveries)),
        key=lambda i: (
            deliveries[i].event.flag_key,
            deliveries[i].event.scheduled_at,
            deliveries[i].event.schedule_id,
        ),
    )
    wait = ctx.lock_timeout_ms > 0
    with conn.transaction():
        set_local(conn, "statement_timeout", ctx.statement_timeout_ms)
        # Flag rows this transaction could lock at once; kept current as it updates them.
        flags: dict[str, Row] = {
            str(r["key"]): r
            for r in conn.execute(
                "SELECT * FROM feature_flags WHERE key = ANY(%s) ORDER BY key"
                " FOR UPDATE SKIP LOCKED",
                (sorted({d.event.flag_key for d in deliveries}),),
            )
        }
        results = apply_set(conn, deliveries, order, flags, ctx, wait_for_locked=wait)
        if results is None:
            results = {
                i: attempt_in_transaction(conn, deliveries[i], ctx, flags)
                for i in order
                if not wait or deliveries[i].event.flag_key in flags
            }
    # The lock waits of one call share one lock timeout: a few flags held elsewhere
    # delay the worker by at most that much, not by the timeout once per schedule.
    budget_ms = float(ctx.lock_timeout_ms)
    for i in order:
        if i not in results:
            wait_ms = max(1, int(min(ctx.lock_timeout_ms, budget_ms)))
            began = time.monotonic()
            with conn.transaction():
                set_local(conn, "statement_timeout", ctx.statement_timeout_ms)
                results[i] = attempt_in_transaction(
                    conn, deliveries[i], dataclasses.replace(ctx, lock_timeout_ms=wait_ms)
                )
            budget_ms -= (time.monotonic() - began) * 1000
    return [results[i] for i in range(len(deliveries))]
