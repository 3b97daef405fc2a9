"""The schedule filters of the UI: read from a query string or a form into the API's
own :class:`~flagsched.admin.service.bulk_models.ScheduleSelection` (so a bad value names
its field exactly as the API would), and written back as a query string, so a
filtered view is a URL that can be shared."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC
from typing import Any
from urllib.parse import urlencode

from pydantic import ValidationError

from flagsched.admin.service.bulk_models import ScheduleSelection
from flagsched.admin.service.schedules_read import ScheduleFilter

#: The filter fields, in the order of the form and of the query string.
FIELDS = ("status", "flag_key", "flag_prefix", "priority", "error_class", "due_after", "due_before")
_TIMES = ("due_after", "due_before")
_NO_OFFSET = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")


def _time(value: str) -> str:
    # A datetime-local input has no offset: the UI's times are UTC.
    return value + "Z" if _NO_OFFSET.match(value) else value


def parse(values: Mapping[str, Sequence[str]]) -> tuple[ScheduleSelection, dict[str, str]]:
    """The selection given by ``values`` (empty fields ignored) and the errors by field
    (then the selection is empty)."""
    raw: dict[str, Any] = {}
    for name in FIELDS:
        given = [v.strip() for v in values.get(name, []) if v.strip()]
        if not given:
            continue
        if name == "status":
            raw[name] = given
        else:
            raw[name] = _time(given[0]) if name in _TIMES else given[0]
    try:
        return ScheduleSelection.model_validate(raw), {}
    except ValidationError as exc:
        errors = {str(e["loc"][0]): e["msg"] for e in exc.errors()}
        return ScheduleSelection(), errors


def to_filter(sel: ScheduleSelection) -> ScheduleFilter:
    """The list query of ``sel``."""
    return ScheduleFilter(
        status=list(sel.status),
        flag_key=sel.flag_key,
        flag_prefix=sel.flag_prefix,
        priority=sel.priority.value if sel.priority else None,
        error_class=sel.error_class,
        due_after=sel.due_after,
        due_before=sel.due_before,
    )


def as_pairs(sel: ScheduleSelection) -> list[tuple[str, str]]:
    """``sel`` as (field, value) pairs, for a query string or hidden form fields."""
    pairs: list[tuple[str, str]] = []
    data = sel.model_dump(mode="json", exclude_defaults=True)
    for name in FIELDS:
        value = data.get(name)
        if isinstance(value, list):
            pairs += [(name, str(v)) for v in value]
        elif value is not None:
            pairs.append((name, str(value)))
    return pairs


def query(sel: ScheduleSelection, **extra: str) -> str:
    """The query string of ``sel`` plus ``extra`` (e.g. a cursor)."""
    return urlencode(as_pairs(sel) + [(k, v) for k, v in extra.items() if v])


def form_value(sel: ScheduleSelection, name: str) -> str:
    """The value a form field shows for ``name`` (a time as datetime-local, in UTC)."""
    value = getattr(sel, name)
    if value is None:
        return ""
    if name in _TIMES:
        return str(value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M"))
    return str(getattr(value, "value", value))
