"""Due order: which of a flag's waiting schedules an attempt applies first (issue 18).

The rule (docs/architecture.md, "Due order"): for one flag, schedules that are due
and have not failed take effect in (scheduled_at, id) order, whatever order their
wake-ups reach the workers in. So a transaction that attempts a flag's schedules
first applies, in that order, the flag's older schedules that are *waiting*: not
attempted yet (``pending`` or ``dispatched``), never failed, and due (older than the
newest schedule attempted, and not after now). Each such schedule is *brought* by
that newest wake-up, its *carrier*: recorded with ``applied_with`` (the carrier's
schedule id) and the carrier's record coordinates, and its own wake-up, arriving
later, finds it done and is dropped.

An older waiting schedule held by another transaction (a dispatcher still claiming
it, waiting for the broker's acknowledgement; another worker attempting it) is an
*ordering wait*, not a failure: the newer schedule is :class:`Deferred`, recorded
nowhere and charged no attempt, and its record goes round the smallest tier to be
tried again a tier later (consumer/outcome.py, consumer/holds.py). At most
:data:`MAX_ORDER_WAITS` times per attempt: after that, a row held for good makes the
newer schedule fail with ``lock_contention`` as a locked flag does, and the retry
policy bounds it from there.

This module is the rule without I/O; consumer/waiting.py reads and locks the rows,
consumer/apply.py runs it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from flagsched.consumer.decode import Delivery
from flagsched.consumer.results import Applied, Attempted, Deferred
from flagsched.runtime.errors import FlagLocked
from flagsched.schemas.events import Priority, ScheduleDue, to_epoch_ms
from flagsched.schemas.headers import RecordHeaders

#: How schedules of one flag are ordered: (scheduled_at, id).
DueKey = tuple[datetime, int]
#: Larger than any schedule id: ``(now, NEWEST_ID)`` bounds "due by now".
NEWEST_ID = 2**63 - 1
#: How many times one attempt of a schedule waits for an older schedule of its flag
#: held elsewhere, a smallest tier each (30 s with the default 1 s tier): longer than
#: a dispatcher holds a claim (the broker's acknowledgement, at most twice
#: FLAGSCHED_CONNECT_TIMEOUT_S, 20 s by default).
MAX_ORDER_WAITS = 30


def due_key(d: Delivery) -> DueKey:
    """A delivery's place among its flag's schedules."""
    return (d.event.scheduled_at, d.event.schedule_id)


def order(deliveries: Sequence[Delivery]) -> list[int]:
    """Indices in (flag, scheduled_at, id) order: each flag's changes in due order, and
    every worker locks flags and schedules in the same order."""
    return sorted(
        range(len(deliveries)),
        key=lambda i: (deliveries[i].event.flag_key, *due_key(deliveries[i])),
    )


@dataclass(frozen=True)
class Bound:
    """What a flag's waiting schedules are pulled up to: the newest schedule of the batch
    (``carrier``, an index into the batch), capped at now."""

    before: DueKey
    carrier: int


def bounds(
    deliveries: Sequence[Delivery], locked: Collection[str], now: datetime
) -> dict[str, Bound]:
    """Per flag the transaction holds, which of its waiting schedules come first: those
    older than its newest delivery in the batch, and due by ``now``."""
    newest: dict[str, int] = {}
    for i, d in enumerate(deliveries):
        key = d.event.flag_key
        if key in locked and (key not in newest or due_key(d) > due_key(deliveries[newest[key]])):
            newest[key] = i
    cap: DueKey = (now, NEWEST_ID)
    return {k: Bound(min(due_key(deliveries[i]), cap), i) for k, i in newest.items()}


def defer(d: Delivery) -> Deferred | None:
    """``d`` waits for an older schedule of its flag held elsewhere: the deferral, or
    None when it has waited :data:`MAX_ORDER_WAITS` times (then it fails as locked)."""
    waits = d.headers.order_waits or 0
    if waits >= MAX_ORDER_WAITS:
        return None
    return Deferred(
        attempt=d.headers.attempt,
        schedule_id=d.event.schedule_id,
        flag_key=d.event.flag_key,
        carried=d.headers.model_copy(update={"order_waits": waits + 1}),
    )


def held_too_long(key: str) -> FlagLocked:
    """Why a schedule that waited :data:`MAX_ORDER_WAITS` times fails (lock_contention)."""
    return FlagLocked(
        f"an older schedule of flag {key!r} is still held by another transaction"
        f" after {MAX_ORDER_WAITS} waits"
    )


def brought(row: Mapping[str, Any], carrier: Delivery) -> Delivery:
    """A waiting schedule's attempt 1, carried by ``carrier``'s wake-up: what its own
    wake-up would ask for, recorded at the carrier's coordinates."""
    event = ScheduleDue.model_construct(
        schedule_id=int(row["id"]),
        flag_key=str(row["flag_key"]),
        scheduled_at=row["scheduled_at"],
        priority=Priority(row["priority"]),
        dispatched_at=row["dispatched_at"] or carrier.event.dispatched_at,
    )
    headers = RecordHeaders.model_construct(attempt=1, due_ms=to_epoch_ms(row["scheduled_at"]))
    return Delivery(
        event,
        headers,
        carrier.coords,
        trace_id=carrier.trace_id,
        applied_with=carrier.event.schedule_id,
    )


def gather(
    results: Mapping[int, Attempted], real: int, carriers: Sequence[int]
) -> dict[int, Attempted]:
    """The results of the batch's own deliveries (indices below ``real``), each carrying
    the applied schedules it brought (index ``real + j`` brought by ``carriers[j]``),
    in due order. A brought schedule that would not apply is not recorded at all: its
    own wake-up attempts it."""
    extra: dict[int, list[Applied]] = {}
    for j, carrier in enumerate(carriers):
        got = results.get(real + j)
        if isinstance(got, Applied):
            extra.setdefault(carrier, []).append(got)
    out = {i: r for i, r in results.items() if i < real}
    for carrier, more in extra.items():
        more.sort(key=lambda r: (r.scheduled_at, r.schedule_id))
        out[carrier] = replace(out[carrier], also_applied=(*more, *out[carrier].also_applied))
    return out
