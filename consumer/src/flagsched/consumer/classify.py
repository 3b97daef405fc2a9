"""The one table that classifies failures, and the one function that reads it.

Each row maps an exception type (psycopg's per-SQLSTATE classes, or flagsched's
own errors) to an :class:`ErrorClass` and what it does to the schedule
(:class:`Disposition`). The first matching row wins, so specific classes come
before their bases. Anything unknown is retried: a bug should not silently
dead-letter a holiday promotion, and exhaustion still bounds it.

:func:`classify` is the only decider, at every level: one schedule's apply
(consumer/attempt.py, consumer/coalesce.py) and a whole poll's batch
(consumer/processor.py). Only the ``pause`` class (the database or the network
is not there) pauses anything; every other failure belongs to one schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import errors as pg

from flagsched.runtime.errors import (
    FlagLocked,
    FlagNotFound,
    InvalidRetryPolicy,
    InvalidSchedule,
    InvalidUpdate,
    PoisonRecord,
    ScheduleNotFound,
    ServiceUnavailable,
)
from flagsched.schemas.error_classes import Disposition, ErrorClass


@dataclass(frozen=True)
class Classification:
    """What a failure is and what happens next."""

    error_class: ErrorClass
    disposition: Disposition

    @property
    def pauses(self) -> bool:
        """Infrastructure: nothing is the schedule's fault, no attempt is used up."""
        return self.disposition is Disposition.PAUSE

    @property
    def permanent(self) -> bool:
        """Retrying cannot help: dead-letter at once."""
        return self.disposition is Disposition.PERMANENT


_R, _P, _I = Disposition.RETRY, Disposition.PERMANENT, Disposition.PAUSE

TABLE: tuple[tuple[type[BaseException], ErrorClass, Disposition], ...] = (
    # flagsched's own
    (PoisonRecord, ErrorClass.POISON, _P),
    (FlagNotFound, ErrorClass.FLAG_NOT_FOUND, _P),
    (InvalidUpdate, ErrorClass.INVALID_UPDATE, _P),
    (InvalidRetryPolicy, ErrorClass.INVALID_RETRY_POLICY, _P),
    (InvalidSchedule, ErrorClass.INVALID_SCHEDULE, _P),
    (ScheduleNotFound, ErrorClass.SCHEDULE_NOT_FOUND, _P),
    (ServiceUnavailable, ErrorClass.INFRASTRUCTURE, _I),
    # contention: another transaction holds what we need; try again later
    (FlagLocked, ErrorClass.LOCK_CONTENTION, _R),  # SKIP LOCKED found it held
    (pg.LockNotAvailable, ErrorClass.LOCK_CONTENTION, _R),  # 55P03, lock_timeout
    (pg.DeadlockDetected, ErrorClass.DEADLOCK, _R),  # 40P01
    (pg.SerializationFailure, ErrorClass.SERIALIZATION, _R),  # 40001
    (pg.QueryCanceled, ErrorClass.STATEMENT_TIMEOUT, _R),  # 57014, statement_timeout
    # the update itself is wrong for this flag: retrying cannot help
    (pg.CheckViolation, ErrorClass.CONSTRAINT_VIOLATION, _P),  # 23514
    (pg.NotNullViolation, ErrorClass.CONSTRAINT_VIOLATION, _P),  # 23502
    (pg.ForeignKeyViolation, ErrorClass.CONSTRAINT_VIOLATION, _P),  # 23503
    (pg.NumericValueOutOfRange, ErrorClass.INVALID_UPDATE, _P),  # 22003
    (pg.InvalidTextRepresentation, ErrorClass.INVALID_UPDATE, _P),  # 22P02
    (pg.InvalidParameterValue, ErrorClass.INVALID_UPDATE, _P),  # 22023
    # the database is not there: no attempt is consumed, the record waits in place
    (pg.AdminShutdown, ErrorClass.INFRASTRUCTURE, _I),  # 57P01
    (pg.CannotConnectNow, ErrorClass.INFRASTRUCTURE, _I),  # 57P03
    (pg.ConnectionException, ErrorClass.INFRASTRUCTURE, _I),  # class 08
    (psycopg.OperationalError, ErrorClass.INFRASTRUCTURE, _I),
    (psycopg.InterfaceError, ErrorClass.INFRASTRUCTURE, _I),
    (ConnectionError, ErrorClass.INFRASTRUCTURE, _I),
)


def classify(exc: BaseException) -> Classification:
    """Look ``exc`` up in :data:`TABLE`; unknown errors are retryable ``unknown``.

    Every site that handles a failure asks this, and only this: ``pauses`` re-raises
    (or pauses the batch in place), anything else is the one schedule's failure.
    """
    for exc_type, error_class, disposition in TABLE:
        if isinstance(exc, exc_type):
            return Classification(error_class, disposition)
    return Classification(ErrorClass.UNKNOWN, Disposition.RETRY)


def settle(exc: Exception) -> Classification:
    """The verdict on one schedule whose attempt raised ``exc``.

    Re-raises ``exc`` when its class pauses: the caller's transaction is lost with
    the database, and the whole batch is paused in place (consumer/processor.py).
    """
    verdict = classify(exc)
    if verdict.pauses:
        raise exc
    return verdict
