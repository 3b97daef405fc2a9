"""Per-field ordering: which fields of a flag a late schedule may still set. Pure: rows in,
decisions out; no database, no Kafka. The worker decides with it; the admin API predicts
with it (a manual retry or a redrive that would be superseded), so both agree.

A schedule's place is ``(scheduled_at, id)``, its *stamp*. Each field of a flag remembers
the stamp of the schedule that set it last (``feature_flags.field_stamps``): a schedule
applied after a newer one of its flag sets only the fields no newer schedule has set
(:func:`fields_to_apply`), and is superseded when that leaves nothing, so the flag ends
as if its schedules had applied in due order, whatever order they arrived in.

Examples (schedule id @ due time: fields):

* ``1 @ 00:00: enabled`` then ``2 @ 00:01: rollout``: both apply whole.
* ``2 @ 00:01: rollout`` applied, then ``1 @ 00:00: enabled, rollout`` arrives: it sets
  ``enabled`` only (``rollout`` is newer already).
* ``2 @ 00:01: rollout`` applied, then ``1 @ 00:00: rollout``: superseded by 2.
* Due at the same instant: the id decides (``7 @ t`` is newer than ``6 @ t``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flagsched.schemas.events import to_epoch_us

#: The flag fields a schedule may set, each with its stamp in ``field_stamps``.
FIELDS = ("enabled", "rollout_percentage", "config")

Row = dict[str, Any]
Stamp = tuple[int, int]  # (scheduled_at in epoch microseconds, schedule id)


class Superseded(Exception):
    """A newer schedule of the flag is applied already (per-flag ordering)."""

    def __init__(self, by: int) -> None:
        super().__init__(f"superseded by schedule {by}")
        self.by = by


def _stamp(moment: datetime, schedule_id: int) -> Stamp:
    return (to_epoch_us(moment), int(schedule_id))


def _stamps(flag: Row) -> dict[str, Stamp]:
    """Which schedule set each field last. A flag last changed before field stamps
    existed (migration 0004) has none: all its fields count as set by its newest
    applied schedule, ``(last_scheduled_at, last_schedule_id)``."""
    stamps = flag.get("field_stamps") or {}
    if stamps:
        return {f: (int(s[0]), int(s[1])) for f, s in stamps.items()}
    if flag["last_scheduled_at"] is None:
        return {}
    legacy = _stamp(flag["last_scheduled_at"], flag["last_schedule_id"])
    return dict.fromkeys(FIELDS, legacy)


def fields_to_apply(flag: Row, row: Row, update: dict[str, Any]) -> dict[str, Any]:
    """Per-field ordering: the fields of ``update`` no newer schedule has set already.

    A schedule applied after a newer one of its flag (it arrived late) still sets
    the other fields, so the flag ends as if they had applied in due order; raises
    :class:`Superseded` when newer schedules have set every field it changes.
    """
    mine, stamps = _stamp(row["scheduled_at"], row["id"]), _stamps(flag)
    newer = {f: stamps[f] for f in update if f in stamps and stamps[f] > mine}
    if len(newer) == len(update):
        raise Superseded(max(newer.values())[1])
    return {f: v for f, v in update.items() if f not in newer}


def stamped(flag: Row, row: Row, fields: dict[str, Any]) -> Row:
    """The flag's ordering columns after ``row`` set ``fields``."""
    mine = _stamp(row["scheduled_at"], row["id"])
    stamps = {f: list(s) for f, s in _stamps(flag).items()}
    stamps.update({f: list(mine) for f in fields})
    last = flag["last_scheduled_at"]
    newest = last is None or _stamp(last, flag["last_schedule_id"]) < mine
    return {
        "field_stamps": stamps,
        "last_scheduled_at": row["scheduled_at"] if newest else last,
        "last_schedule_id": row["id"] if newest else flag["last_schedule_id"],
    }
