"""What every admin action reads besides its arguments: the settings the workers also
use (topics, the global retry policy) and the admin API's own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from flagsched.admin.service.errors import InvalidInput, NotFound
from flagsched.admin.service.models import Schedule
from flagsched.admin.settings import AdminSettings
from flagsched.runtime.db.connect import DictConnection
from flagsched.runtime.settings import Settings
from flagsched.schemas.retry import PolicyOverride, RetryPolicy, policy_for
from flagsched.schemas.topics import TopicLayout

Row = dict[str, Any]


@dataclass(frozen=True)
class Env:
    """Settings shared by the actions of one process."""

    settings: Settings
    admin: AdminSettings

    @property
    def layout(self) -> TopicLayout:
        """The topic layout the workers consume."""
        return self.settings.topic_layout()

    @property
    def default_policy(self) -> RetryPolicy:
        """The global retry policy, as the workers build it."""
        return self.settings.default_retry_policy()

    def override_of(self, row: Row) -> PolicyOverride:
        """A schedule's own policy override, its ``max_retries`` column winning, exactly as
        the worker reads it (consumer/bookkeeping.py)."""
        override = PolicyOverride.model_validate(row["retry_policy"] or {})
        if row["max_retries"] is not None:
            override = override.model_copy(update={"max_retries": row["max_retries"]})
        return override

    def policy_of(self, row: Row, error_class: str | None = None) -> RetryPolicy:
        """The policy the worker applies to a failure of ``row`` of ``error_class``."""
        return policy_for(self.default_policy, self.override_of(row), error_class)

    def check_policy(
        self, override: PolicyOverride | None, max_retries: int | None, field: str = "retry_policy"
    ) -> None:
        """Validate a policy with the worker's own model: the merge must be consistent."""
        if max_retries is not None:
            override = (override or PolicyOverride()).model_copy(
                update={"max_retries": max_retries}
            )
        try:
            self.default_policy.merged(override)
        except ValidationError as exc:
            raise InvalidInput(field, exc.errors()[0]["msg"]) from exc


def to_schedule(row: Row) -> Schedule:
    """The API view of a schedule row."""
    return Schedule.model_validate({k: row[k] for k in Schedule.model_fields})


def find_schedule(
    conn: DictConnection, flag_key: str, schedule_id: int, *, lock: bool = False
) -> Row:
    """The schedule ``schedule_id`` of ``flag_key`` (locked if ``lock``), or NotFound."""
    row = conn.execute(
        "SELECT * FROM flag_schedules WHERE id = %s" + (" FOR UPDATE" if lock else ""),
        (schedule_id,),
    ).fetchone()
    if row is None or row["flag_key"] != flag_key:
        raise NotFound(f"flag {flag_key!r} has no schedule {schedule_id}")
    return row


def schedule_path(flag_key: str, schedule_id: int) -> str:
    """The resource path of a schedule."""
    return f"/api/admin/flags/{flag_key}/schedules/{schedule_id}"
