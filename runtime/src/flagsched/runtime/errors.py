"""flagsched's exception family. Classification of errors lives in consumer/classify.py.

:class:`PoisonRecord` is the contract's own (``flagsched.schemas.errors``), re-exported here
so that services name every error from one module.
"""

from __future__ import annotations

from flagsched.schemas.errors import PoisonRecord as PoisonRecord


class FlagschedError(Exception):
    """Base of every error flagsched raises on purpose."""


class ConfigError(FlagschedError):
    """A setting is missing or invalid; the message names the setting."""


class ServiceUnavailable(FlagschedError):
    """Kafka or PostgreSQL could not be reached within the configured time."""


class DevStackError(FlagschedError):
    """The local Kafka/PostgreSQL stack could not be started or inspected."""


class MigrationError(FlagschedError):
    """A schema migration failed or the applied history does not match the files."""


class FlagNotFound(FlagschedError):
    """The schedule names a flag that does not exist."""


class FlagLocked(FlagschedError):
    """The flag row is locked by another transaction and the worker does not wait for it."""


class InvalidUpdate(FlagschedError):
    """The schedule's update does not fit the flag (unknown field, wrong type, range)."""


class InvalidRetryPolicy(FlagschedError):
    """The schedule's own ``retry_policy`` does not fit the policy model."""


class InvalidSchedule(FlagschedError):
    """The schedule row breaks the contract (its flag key, or what its record says of it)."""


class ScheduleNotFound(FlagschedError):
    """The event names a schedule id that is not in the database."""
