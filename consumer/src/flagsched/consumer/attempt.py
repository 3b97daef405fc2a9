"""One attempt of one schedule in PostgreSQL, and the rules every attempt shares.

The row is the truth. An attempt locks the schedule row and decides from its
state and the attempt rows whether this record is new work, a replay of an
attempt already recorded (its Kafka side effects were lost, so they are
redone), or stale (:func:`triage`); then applies the update inside a
savepoint, so a failed apply rolls back only itself and the attempt's
bookkeeping still commits with it. consumer/coalesce.py applies a whole poll
with the same rules in a few statements; this module is its fallback and the
path for flags that must be waited for.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from pydantic import ValidationError

from flagsched.consumer import dueorder
from flagsched.consumer.bookkeeping import (
    AttemptContext,
    Row,
    plan_applied,
    plan_cancelled,
    plan_failure,
    plan_superseded,
    record,
    replay,
)
from flagsched.consumer.classify import settle
from flagsched.consumer.decode import Delivery
from flagsched.consumer.flag_write import STATE as STATE
from flagsched.consumer.flag_write import state_json, write_flags
from flagsched.consumer.jsonb import Unreadable
from flagsched.consumer.results import Attempted, Dropped, Poison
from flagsched.runtime.errors import FlagLocked, FlagNotFound, FlagschedError, InvalidUpdate
from flagsched.schemas import field_order
from flagsched.schemas.error_classes import ErrorClass
from flagsched.schemas.events import to_epoch_ms
from flagsched.schemas.field_order import fields_to_apply as fields_to_apply
from flagsched.schemas.field_order import stamped as stamped
from flagsched.schemas.headers import DeadLetterReason
from flagsched.schemas.updates import FlagUpdate

#: A schedule row ``s`` with the attempt row ``a`` its record asks for (``rec_*``, NULL
#: when not recorded): what :func:`triage` reads.
SCHEDULE_WITH_ATTEMPT = """s.*, a.attempt AS rec_attempt, a.due_at AS rec_due_at,
       a.outcome AS rec_outcome, a.error_class AS rec_error_class,
       a.error_message AS rec_error_message, a.dlt_reason AS rec_dlt_reason,
       a.next_attempt_at AS rec_next_attempt_at, a.applied_with AS rec_applied_with"""

# The schedule row (locked) with the attempt row this record asks for, if recorded.
SCHEDULE_AND_ATTEMPT = f"""
SELECT {SCHEDULE_WITH_ATTEMPT}
  FROM flag_schedules s
  LEFT JOIN schedule_retry_attempts a ON a.schedule_id = s.id AND a.attempt = %s
 WHERE s.id = %s
   FOR UPDATE OF s
"""


def triage(conn: psycopg.Connection[Row], delivery: Delivery, row: Row | None) -> Attempted | Row:
    """What the locked schedule row (joined with its attempt row) says of this record.

    A result when nothing is to be attempted (unknown schedule,
    replay of a recorded attempt, stale or duplicate wake-up); else the schedule row,
    due for this attempt (it may be cancelled: the caller records that).
    """
    ev, n = delivery.event, delivery.headers.attempt
    if row is None:
        return Poison(
            attempt=n,
            schedule_id=ev.schedule_id,
            flag_key=ev.flag_key,
            error_class=ErrorClass.SCHEDULE_NOT_FOUND.value,
            error_message=f"schedule {ev.schedule_id} does not exist",
            reason=DeadLetterReason.PERMANENT,
            due_ms=delivery.headers.due_ms,
        )
    row = dict(row)
    recorded = {k[4:]: row.pop(k) for k in list(row) if k.startswith("rec_")}
    if row["flag_key"] != ev.flag_key:
        # Flags are locked by the record's key and changed by the row's: a record that
        # disagrees (forged, or the row's flag_key was edited after dispatch) touches
        # nothing. The stuck-row sweep re-sends an edited row under its own key.
        return Poison(
            attempt=n,
            schedule_id=ev.schedule_id,
            flag_key=ev.flag_key,
            error_class=ErrorClass.POISON.value,
            error_message=f"record names flag {ev.flag_key!r} but schedule {ev.schedule_id}"
            f" is of flag {row['flag_key']!r}",
            reason=DeadLetterReason.POISON,
            due_ms=delivery.headers.due_ms,
        )
    if recorded["attempt"] is not None:
        if _ms(recorded["due_at"]) != delivery.headers.due_ms:
            return _drop(delivery, "another due time than the recorded attempt's")
        # Applied by another wake-up, ahead of it (due order): that wake-up's record sends
        # its events, and sends them again if redelivered (consumer/dueorder.py).
        if recorded["applied_with"]:
            return _drop(delivery, "applied ahead of it by an older-first wake-up (due order)")
        return replay(conn, row, recorded)
    if row["status"] in ("applied", "dead", "superseded"):
        return _drop(delivery, f"schedule is {row['status']}")
    if n != row["retry_count"] + 1:
        return _drop(delivery, f"the row expects attempt {row['retry_count'] + 1}")
    # A wake-up for another due time than the row's (edited or re-armed since it was
    # sent, e.g. after pre-dispatch) is stale: the row's own wake-up does the work.
    expected = row["scheduled_at"] if n == 1 else row["next_retry_at"]
    if expected is None or _ms(expected) != delivery.headers.due_ms:
        return _drop(delivery, "another due time than the row's")
    return row


def _drop(delivery: Delivery, why: str) -> Dropped:
    """A stale, duplicate or unexpected wake-up: committed, nothing else."""
    ev = delivery.event
    return Dropped(
        attempt=delivery.headers.attempt, schedule_id=ev.schedule_id, flag_key=ev.flag_key, why=why
    )


def parse_update(row: Row) -> dict[str, Any]:
    """The fields the schedule sets; raises :class:`InvalidUpdate` if it sets none or bad ones."""
    key = row["flag_key"]
    if isinstance(row["updates"], Unreadable):
        raise InvalidUpdate(f"invalid update for flag {key!r}: {row['updates'].reason}")
    try:
        update = FlagUpdate.model_validate(row["updates"]).fields()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "updates"
        raise InvalidUpdate(f"invalid update for flag {key!r}: {where}: {first['msg']}") from exc
    if not update:
        raise InvalidUpdate(f"update for flag {key!r} changes nothing")
    return update


def unavailable(conn: psycopg.Connection[Row], keys: Collection[str]) -> dict[str, Exception]:
    """Why each flag row this transaction could not lock without waiting is unavailable:
    locked by another transaction, or not there (one query for all of them)."""
    if not keys:
        return {}
    exists = {
        str(r["key"])
        for r in conn.execute("SELECT key FROM feature_flags WHERE key = ANY(%s)", (sorted(keys),))
    }
    return {k: _locked(k) if k in exists else _not_found(k) for k in keys}


def _locked(key: str) -> FlagLocked:
    return FlagLocked(f"flag {key!r} is locked by another transaction")


def _not_found(key: str) -> FlagNotFound:
    return FlagNotFound(f"flag {key!r} does not exist")


def attempt_in_transaction(
    conn: psycopg.Connection[Row],
    delivery: Delivery,
    ctx: AttemptContext,
    flags: dict[str, Row] | None = None,
    held: Collection[str] = (),
) -> Attempted:
    """One attempt inside the caller's transaction.

    ``flags`` holds the flag rows the caller's transaction has locked already (and is
    updated here); a flag missing from it is not waited for (lock_contention, or
    flag_not_found). Without ``flags`` the flag row is locked here, waiting up to the
    lock timeout. ``held``: flags with an older waiting schedule held elsewhere (see
    consumer/coalesce.py::apply_set): this one is deferred, or fails as locked.
    """
    started = datetime.now(UTC)
    # The schedule row may be briefly locked by a dispatcher publishing it: wait for it
    # (statement timeout) instead of burning an attempt. Its attempt row comes along.
    found = conn.execute(
        SCHEDULE_AND_ATTEMPT, (delivery.headers.attempt, delivery.event.schedule_id)
    ).fetchone()
    row = triage(conn, delivery, found)
    if not isinstance(row, dict):
        return row
    if row["status"] == "cancelled":
        return record(conn, plan_cancelled(row, delivery, ctx, started))
    if row["flag_key"] in held:
        deferred = dueorder.defer(delivery)
        if deferred is not None:
            return deferred
        exc = dueorder.held_too_long(row["flag_key"])
        return record(conn, plan_failure(row, delivery, ctx, started, exc, settle(exc)))
    if flags is None:
        set_local(conn, "lock_timeout", ctx.lock_timeout_ms)
    try:
        with conn.transaction():  # savepoint: a failed apply rolls back only itself
            version = _apply_update(conn, row, delivery.headers.attempt, flags)
    except field_order.Superseded as sup:
        return record(conn, plan_superseded(row, delivery, ctx, started, sup.by))
    except (psycopg.Error, FlagschedError) as exc:
        return record(conn, plan_failure(row, delivery, ctx, started, exc, settle(exc)))
    return record(conn, plan_applied(row, delivery, ctx, started, version))


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else to_epoch_ms(moment)


def set_local(conn: psycopg.Connection[Row], name: str, ms: int) -> None:
    """``SET LOCAL name = '<ms>ms'`` for the open transaction."""
    conn.execute(sql.SQL("SET LOCAL {} = {}").format(sql.Identifier(name), sql.Literal(f"{ms}ms")))


def _apply_update(
    conn: psycopg.Connection[Row], row: Row, attempt: int, flags: dict[str, Row] | None
) -> int:
    """Change the flag; return its new version. Raises on any reason not to."""
    key = row["flag_key"]
    if flags is not None:
        flag = flags.get(key)
        if flag is None:
            raise unavailable(conn, [key])[key]
    else:
        flag = conn.execute(
            "SELECT * FROM feature_flags WHERE key = %s FOR UPDATE", (key,)
        ).fetchone()
        if flag is None:
            raise _not_found(key)
    update = parse_update(row)
    fields = fields_to_apply(flag, row, update)
    after = {**flag, **stamped(flag, row, fields), **fields, "version": int(flag["version"]) + 1}
    entry = (key, row["id"], attempt, after["version"], state_json(flag), state_json(after))
    write_flags(conn, [after], [entry])  # the statement a folded poll writes with
    if flags is not None:
        flags[key] = after
    return int(after["version"])
