"""The shape of ``flag_schedules.updates``: which flag fields a schedule may change.

Range rules (rollout 0..100) are enforced by the database's CHECK constraint, so
a bad value is a real constraint violation classified as permanent.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt


class FlagUpdate(BaseModel):
    """A partial update of a feature flag; at least one field must be set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: StrictBool | None = None
    rollout_percentage: StrictInt | None = None
    config: dict[str, Any] | None = None

    def fields(self) -> dict[str, Any]:
        """The fields this update sets."""
        return self.model_dump(exclude_none=True)
