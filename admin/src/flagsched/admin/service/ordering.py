"""Whether a schedule would be superseded if attempted now: a read-only prediction for
the responses of a manual retry and a redrive. The worker decides for real, with the
same rule (:mod:`flagsched.schemas.field_order`) on the same flag columns."""

from __future__ import annotations

from typing import Any

from flagsched.schemas.field_order import FIELDS, Superseded, fields_to_apply


def would_supersede(flag: dict[str, Any] | None, schedule: dict[str, Any]) -> bool:
    """True when newer schedules of the flag have set every field ``schedule`` sets."""
    if flag is None:
        return False
    update = {f: v for f in FIELDS if (v := (schedule["updates"] or {}).get(f)) is not None}
    if not update:
        return False
    try:
        fields_to_apply(flag, schedule, update)
    except Superseded:
        return True
    return False
