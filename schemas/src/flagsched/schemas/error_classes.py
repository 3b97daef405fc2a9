"""Names of error classes, as they appear in headers, attempt rows and metrics.

Which exception maps to which class, and what each class means for the record
(retry, dead-letter, pause in place), is decided in consumer/classify.py.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorClass(StrEnum):
    """A failure's class; the value is the stable wire name."""

    LOCK_CONTENTION = "lock_contention"
    DEADLOCK = "deadlock"
    SERIALIZATION = "serialization"
    STATEMENT_TIMEOUT = "statement_timeout"
    INFRASTRUCTURE = "infrastructure"
    FLAG_NOT_FOUND = "flag_not_found"
    INVALID_UPDATE = "invalid_update"
    INVALID_RETRY_POLICY = "invalid_retry_policy"
    INVALID_SCHEDULE = "invalid_schedule"
    CONSTRAINT_VIOLATION = "constraint_violation"
    SCHEDULE_NOT_FOUND = "schedule_not_found"
    POISON = "poison"
    UNKNOWN = "unknown"


class Disposition(StrEnum):
    """What a failure of a class does to the schedule."""

    RETRY = "retry"  # consume an attempt, go to a delay tier
    PERMANENT = "permanent"  # dead-letter at once
    PAUSE = "pause"  # infrastructure: no attempt consumed, retried in place
