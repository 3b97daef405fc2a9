"""The shape of ``flag_schedules.updates``: which flag fields a schedule may change.

Range rules (rollout 0..100) are enforced by the database's CHECK constraint, so
a bad value is a real constraint violation classified as permanent.

Size and depth are bounded (:data:`MAX_UPDATE_BYTES`, :data:`MAX_UPDATE_DEPTH`),
here and by the CHECKs of migration 0005, so that no schedule can hand a worker
a document too large or too deep to read.
"""

from __future__ import annotations

import json
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, model_validator

#: The largest ``updates`` document, as JSON text in UTF-8 (a flag's whole config fits
#: many times over; migration 0005 checks ``octet_length(updates::text)``).
MAX_UPDATE_BYTES: Final = 65_536
#: The deepest nesting of objects and arrays in ``updates``, the document itself
#: counting as 1: ``{"config": {"a": [1]}}`` is 3 deep.
MAX_UPDATE_DEPTH: Final = 32


def json_depth(value: Any) -> int:
    """How deeply objects and arrays nest in ``value`` (a scalar is 0); iterative, so
    any depth is measured without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children)
    return deepest


def update_bounds_error(value: Any) -> str | None:
    """Why ``value`` is too deep or too large for an update, or ``None`` if it is not."""
    depth = json_depth(value)
    if depth > MAX_UPDATE_DEPTH:
        return f"nested {depth} levels deep, over the limit of {MAX_UPDATE_DEPTH}"
    size = len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
    if size > MAX_UPDATE_BYTES:
        return f"{size} bytes of JSON, over the limit of {MAX_UPDATE_BYTES}"
    return None


class FlagUpdate(BaseModel):
    """A partial update of a feature flag; at least one field must be set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: StrictBool | None = None
    rollout_percentage: StrictInt | None = None
    config: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        if isinstance(data, dict) and (why := update_bounds_error(data)) is not None:
            raise ValueError(why)
        return data

    def fields(self) -> dict[str, Any]:
        """The fields this update sets."""
        return self.model_dump(exclude_none=True)
