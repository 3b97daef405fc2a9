"""Whether a schedule would be superseded if attempted now: a read-only prediction for
the responses of a manual retry and a redrive. The worker decides for real
(consumer/attempt.py ``fields_to_apply``, from the same flag columns, migration 0004):
every field the schedule sets was set by a schedule due later (ties: the higher id)."""

from __future__ import annotations

from typing import Any

from flagsched.schemas.events import to_epoch_us

#: The flag fields a schedule may set (their stamps live in ``field_stamps``).
FIELDS = ("enabled", "rollout_percentage", "config")


def would_supersede(flag: dict[str, Any] | None, schedule: dict[str, Any]) -> bool:
    """True when newer schedules of the flag have set every field ``schedule`` sets."""
    if flag is None:
        return False
    fields = [f for f in FIELDS if (schedule["updates"] or {}).get(f) is not None]
    if not fields:
        return False
    stamps = {f: (int(s[0]), int(s[1])) for f, s in (flag.get("field_stamps") or {}).items()}
    if not stamps and flag.get("last_scheduled_at") is not None:
        legacy = (to_epoch_us(flag["last_scheduled_at"]), int(flag["last_schedule_id"]))
        stamps = dict.fromkeys(FIELDS, legacy)
    mine = (to_epoch_us(schedule["scheduled_at"]), int(schedule["id"]))
    return all(f in stamps and stamps[f] > mine for f in fields)
