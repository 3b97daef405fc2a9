"""A poll's attempts in a few set-based statements, each flag's schedules folded into one.

The same rules as consumer/attempt.py (triage, per-flag ordering, update
validation), applied to the whole batch at once inside the caller's
transaction:

1. one statement locks every schedule row of the batch (in id order) with the
   attempt row each record asks for;
2. in Python, in (flag, scheduled_at, id) order, each schedule is judged against
   the flag as the schedules before it in the batch leave it (per-field ordering,
   consumer/field_order.py): a flag's changes
   are folded into its final state, each schedule keeping its own version,
   change-log entry, attempt row and outcome;
3. one statement writes every flag's final state and all change-log entries, in a
   savepoint (consumer/flag_write.py, the statement the one-at-a-time path uses too);
   when a batch folds several changes into one flag, every intermediate state is
   first checked against the flag table's own constraints, so a change that would
   have violated one is never hidden by a later change;
4. one statement records every attempt (consumer/bookkeeping.py).

If step 3 fails (a constraint, a value out of range) the savepoint is rolled
back and the caller redoes the batch one schedule at a time, a savepoint each,
which pins the failure on the schedule that caused it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg

from flagsched.consumer import dueorder
from flagsched.consumer.attempt import (
    SCHEDULE_WITH_ATTEMPT,
    STATE,
    fields_to_apply,
    parse_update,
    stamped,
    triage,
    unavailable,
)
from flagsched.consumer.bookkeeping import (
    AttemptContext,
    Planned,
    Row,
    plan_applied,
    plan_cancelled,
    plan_failure,
    plan_superseded,
    write_outcomes,
)
from flagsched.consumer.classify import settle
from flagsched.consumer.decode import Delivery
from flagsched.consumer.flag_write import write_flags
from flagsched.consumer.results import Applied, Attempted
from flagsched.runtime.errors import FlagLocked, InvalidUpdate
from flagsched.runtime.logtext import printable
from flagsched.schemas import field_order

log = logging.getLogger(__name__)

# Every schedule row of the batch, locked in id order (workers lock in the same order,
# so they cannot deadlock), with the attempt row each record asks for.
_ROWS = f"""
SELECT {SCHEDULE_WITH_ATTEMPT}
  FROM unnest(%b::bigint[], %b::integer[]) AS w(id, n)
  JOIN flag_schedules s ON s.id = w.id
  LEFT JOIN schedule_retry_attempts a ON a.schedule_id = s.id AND a.attempt = w.n
 ORDER BY s.id
   FOR UPDATE OF s
"""


@dataclass
class _Fold:
    """One flag's changes in this batch: its state as they leave it, and the log."""

    flag: Row
    states: list[Row] = field(default_factory=list)
    log: list[tuple[int, int, int, str, str]] = field(default_factory=list)


def lock_rows(conn: psycopg.Connection[Row], deliveries: Sequence[Delivery]) -> dict[int, Row]:
    """Lock the schedule rows of ``deliveries`` (in id order), each with the attempt row
    its record asks for; by schedule id (of a schedule twice in the batch, one of them)."""
    ids = [d.event.schedule_id for d in deliveries]
    return {
        int(r["id"]): r for r in conn.execute(_ROWS, (ids, [d.headers.attempt for d in deliveries]))
    }


def apply_set(
    conn: psycopg.Connection[Row],
    deliveries: Sequence[Delivery],
    order: Sequence[int],
    flags: dict[str, Row],
    ctx: AttemptContext,
    *,
    wait_for_locked: bool,
    found: dict[int, Row] | None = None,
    held: Collection[str] = (),
) -> dict[int, Attempted] | None:
    """Attempt ``deliveries`` (in ``order``) inside the open transaction.

    ``flags`` are the flag rows this transaction holds locked. A flag locked by
    another transaction fails its schedules at once with lock_contention, unless
    ``wait_for_locked``: then they are left out of the result for the caller to
    wait for. ``found``: the schedule rows, locked already (:func:`lock_rows`).
    ``held``: flags with an older waiting schedule held elsewhere (not in ``flags``):
    their schedules are deferred (consumer/dueorder.py), or fail as locked once they
    have waited long enough.
    A schedule brought by another wake-up (``Delivery.applied_with``,
    consumer/dueorder.py) is recorded only if it applies. Returns results by index
    into ``deliveries``, or ``None`` when the batch must be redone one schedule at a
    time (nothing of it was written): a schedule that appears twice, or a folded
    write that failed.
    """
    ids = [d.event.schedule_id for d in deliveries]
    if len(set(ids)) != len(ids):
        return None
    if found is None:
        found = lock_rows(conn, deliveries)
    missing = unavailable(conn, {d.event.flag_key for d in deliveries} - flags.keys() - set(held))
    missing |= {k: dueorder.held_too_long(k) for k in held}
    folds: dict[str, _Fold] = {}
    planned: list[Planned] = []
    results: dict[int, Attempted] = {}
    for i in order:
        d = deliveries[i]
        started = datetime.now(UTC)
        row = triage(conn, d, found.get(d.event.schedule_id))
        if not isinstance(row, dict):
            results[i] = row
            continue
        key = row["flag_key"]
        if row["status"] == "cancelled":
            step = plan_cancelled(row, d, ctx, started)
        elif key in held and (deferred := dueorder.defer(d)) is not None:
            results[i] = deferred  # nothing recorded: it waits for the older schedule
            continue
        elif key in missing:
            exc = missing[key]
            if wait_for_locked and isinstance(exc, FlagLocked):
                continue  # the caller waits for this flag, outside this transaction
            step = _failure(row, d, ctx, started, exc)
        else:
            fold = folds.setdefault(key, _Fold(dict(flags[key])))
            step = _fold(fold, row, d, ctx, started)
        if d.applied_with is not None and not isinstance(step.result, Applied):
            continue  # left to its own wake-up (it changed nothing in the fold)
        planned.append(step)
        results[i] = step.result
    try:
        with conn.transaction():  # savepoint: a failed write leaves the batch untouched
            _write_flags(conn, folds)
    except psycopg.Error as exc:
        settle(exc)  # re-raised if it pauses
        log.info(
            "folded write refused (%s); applying the batch one schedule at a time",
            printable(exc, 500),  # the message's DETAIL quotes row values
        )
        return None
    write_outcomes(conn, planned)
    return results


def _failure(
    row: Row, d: Delivery, ctx: AttemptContext, started: datetime, exc: Exception
) -> Planned:
    return plan_failure(row, d, ctx, started, exc, settle(exc))


def _fold(fold: _Fold, row: Row, d: Delivery, ctx: AttemptContext, started: datetime) -> Planned:
    """Fold one schedule's change into its flag's state; plan its outcome."""
    flag = fold.flag
    try:
        fields = fields_to_apply(flag, row, parse_update(row))
    except field_order.Superseded as sup:
        return plan_superseded(row, d, ctx, started, sup.by)
    except InvalidUpdate as exc:
        return _failure(row, d, ctx, started, exc)
    before = {k: flag[k] for k in STATE}
    flag.update(stamped(flag, row, fields))
    flag.update(fields)
    flag["version"] = int(flag["version"]) + 1
    after = {k: flag[k] for k in STATE}
    fold.states.append(dict(flag))
    fold.log.append(
        (row["id"], d.headers.attempt, flag["version"], json.dumps(before), json.dumps(after))
    )
    return plan_applied(row, d, ctx, started, flag["version"])


def _write_flags(conn: psycopg.Connection[Row], folds: dict[str, _Fold]) -> None:
    changed = {k: f for k, f in folds.items() if f.log}
    # Only the final state reaches feature_flags (and its constraints): the states in
    # between are checked against the same constraints first.
    write_flags(
        conn,
        [f.flag for f in changed.values()],
        [(k, *entry) for k, f in changed.items() for entry in f.log],
        between=[s for f in changed.values() if len(f.states) > 1 for s in f.states[:-1]],
    )
