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
from datetime import UTC, datetime

import psycopg
from psycopg import errors

from flagsched.consumer import dueorder
from flagsched.consumer.attempt import attempt_in_transaction, set_local
from flagsched.consumer.bookkeeping import AttemptContext, Row
from flagsched.consumer.coalesce import apply_set, lock_rows
from flagsched.consumer.decode import Delivery
from flagsched.consumer.results import Applied, Attempted, Dropped, is_replay
from flagsched.consumer.waiting import brought_before, lock_waiting

#: At most this many waiting schedules of one flag are brought by one attempt; a flag
#: with more is busy (its schedules retry while the older ones' own wake-ups arrive).
MAX_BROUGHT_PER_FLAG = 500


def run_order(deliveries: Sequence[Delivery]) -> list[int]:
    """Indexes of ``deliveries`` in the order in which every worker locks and applies
    them: the due order of consumer/dueorder.py."""
    return dueorder.order(deliveries)


def run_batch(
    conn: psycopg.Connection[Row], deliveries: Sequence[Delivery], ctx: AttemptContext
) -> list[Attempted]:
    """The outcome of every delivery, in the order given.

    Order is (flag, scheduled_at, id): each flag's changes apply in due order, and
    workers lock flags and schedules in the same order, so their batches cannot
    deadlock. An error outside every savepoint fails the whole call (nothing of the
    open transaction commits): the caller pauses in place if the error table says
    ``pause``, else redoes the batch one schedule at a time (consumer/isolate.py).
    """
    order = run_order(deliveries)
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
        results = _attempt(conn, deliveries, flags, ctx, wait_for_locked=wait)
    # The lock waits of one call share one lock timeout: a few flags held elsewhere
    # delay the worker by at most that much, not by the timeout once per schedule.
    budget_ms = float(ctx.lock_timeout_ms)
    for i in order:
        if i not in results:
            wait_ms = max(1, int(min(ctx.lock_timeout_ms, budget_ms)))
            began = time.monotonic()
            with conn.transaction():
                set_local(conn, "statement_timeout", ctx.statement_timeout_ms)
                results[i] = _attempt_waiting(conn, deliveries[i], ctx, wait_ms)
            budget_ms -= (time.monotonic() - began) * 1000
    return [results[i] for i in range(len(deliveries))]


def _attempt(
    conn: psycopg.Connection[Row],
    deliveries: Sequence[Delivery],
    flags: dict[str, Row],
    ctx: AttemptContext,
    *,
    wait_for_locked: bool,
    wait_for_waiting: bool = False,
    found: dict[int, Row] | None = None,
) -> dict[int, Attempted]:
    """Attempt ``deliveries`` with the flags this transaction holds, each flag's waiting
    schedules first (see consumer/dueorder.py). Results by index into ``deliveries``;
    with ``wait_for_locked``, those of flags held elsewhere are left out. ``found``:
    the deliveries' schedule rows, if locked already."""
    # The batch's own rows first: a transaction that waits for a row holds no waiting
    # schedule of anyone's yet, so two batches cannot wait for each other.
    if found is None:
        found = lock_rows(conn, deliveries)
    ids = [d.event.schedule_id for d in deliveries]
    bounds = dueorder.bounds(deliveries, flags.keys(), datetime.now(UTC))
    waiting = lock_waiting(conn, bounds, ids, limit=MAX_BROUGHT_PER_FLAG, wait=wait_for_waiting)
    for key in waiting.busy | waiting.held:
        # Not applied now: an older schedule held elsewhere is waited for (the flag's
        # schedules are deferred); too many older ones, as if the flag were locked.
        del flags[key]
    carriers = [bounds[str(r["flag_key"])].carrier for r in waiting.rows]
    brought = [
        dueorder.brought(r, deliveries[c]) for r, c in zip(waiting.rows, carriers, strict=True)
    ]
    everything = [*deliveries, *brought]
    order = dueorder.order(everything)
    found |= {int(r["id"]): r for r in waiting.rows}
    results = apply_set(
        conn,
        everything,
        order,
        flags,
        ctx,
        wait_for_locked=wait_for_locked,
        found=found,
        held=waiting.held,
    )
    if results is None:
        results = {}
        for i in order:
            d = everything[i]
            key = d.event.flag_key
            if wait_for_locked and key not in flags and key not in waiting.held:
                continue
            if d.applied_with is None:
                got: Attempted | None = attempt_in_transaction(
                    conn, d, ctx, flags, held=waiting.held
                )
            else:
                got = _attempt_brought(conn, d, ctx, flags)
            if got is not None:
                results[i] = got
    out = dueorder.gather(results, len(deliveries), carriers)
    return _with_brought_before(conn, deliveries, out)


def _attempt_brought(
    conn: psycopg.Connection[Row], d: Delivery, ctx: AttemptContext, flags: dict[str, Row]
) -> Applied | None:
    """A brought schedule, one at a time: recorded only if it applies."""
    with conn.transaction() as savepoint:
        got = attempt_in_transaction(conn, d, ctx, flags)
        if not isinstance(got, Applied):
            raise psycopg.Rollback(savepoint)  # its own wake-up attempts it
    return got if isinstance(got, Applied) else None


def _attempt_waiting(
    conn: psycopg.Connection[Row], d: Delivery, ctx: AttemptContext, wait_ms: int
) -> Attempted:
    """One delivery whose flag was held elsewhere: its schedule row first (a dispatcher
    may hold it briefly: waited for up to the statement timeout), then its flag row and
    the flag's waiting schedules, each waited for up to ``wait_ms``."""
    found = lock_rows(conn, [d])
    set_local(conn, "lock_timeout", wait_ms)
    flags: dict[str, Row] = {}
    try:
        with conn.transaction():
            got = conn.execute(
                "SELECT * FROM feature_flags WHERE key = %s FOR UPDATE", (d.event.flag_key,)
            ).fetchone()
        if got is not None:
            flags[d.event.flag_key] = got
    except (errors.LockNotAvailable, errors.DeadlockDetected):
        pass  # still held: lock_contention, through the tiers
    return _attempt(
        conn, [d], flags, ctx, wait_for_locked=False, wait_for_waiting=True, found=found
    )[0]


def _with_brought_before(
    conn: psycopg.Connection[Row],
    deliveries: Sequence[Delivery],
    results: dict[int, Attempted],
) -> dict[int, Attempted]:
    """A record processed before whose Kafka transaction did not commit is here again:
    its result is a replay or a drop, and what it brought the first time is sent again."""
    again = [
        i
        for i, r in results.items()
        if (is_replay(r) or isinstance(r, Dropped)) and not r.also_applied
    ]
    if not again:
        return results
    found = brought_before(conn, [deliveries[i].coords for i in again])
    for i in again:
        c = deliveries[i].coords
        more = found.get((c.topic, c.partition, c.offset))
        if more:
            results[i] = dataclasses.replace(results[i], also_applied=more)
    return results
