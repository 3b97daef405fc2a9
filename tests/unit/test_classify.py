"""The error table maps real exception classes to a class and a disposition."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors as pg

from flagsched.consumer.classify import classify
from flagsched.runtime.errors import FlagNotFound, InvalidUpdate, PoisonRecord
from flagsched.schemas.error_classes import Disposition, ErrorClass


@pytest.mark.parametrize(
    ("exc", "cls", "disp"),
    [
        (pg.LockNotAvailable(), ErrorClass.LOCK_CONTENTION, Disposition.RETRY),
        (pg.DeadlockDetected(), ErrorClass.DEADLOCK, Disposition.RETRY),
        (pg.SerializationFailure(), ErrorClass.SERIALIZATION, Disposition.RETRY),
        (pg.QueryCanceled(), ErrorClass.STATEMENT_TIMEOUT, Disposition.RETRY),
        (pg.CheckViolation(), ErrorClass.CONSTRAINT_VIOLATION, Disposition.PERMANENT),
        (FlagNotFound("x"), ErrorClass.FLAG_NOT_FOUND, Disposition.PERMANENT),
        (InvalidUpdate("x"), ErrorClass.INVALID_UPDATE, Disposition.PERMANENT),
        (PoisonRecord("x"), ErrorClass.POISON, Disposition.PERMANENT),
        (pg.AdminShutdown(), ErrorClass.INFRASTRUCTURE, Disposition.PAUSE),
        (psycopg.OperationalError("server closed"), ErrorClass.INFRASTRUCTURE, Disposition.PAUSE),
        (RuntimeError("bug"), ErrorClass.UNKNOWN, Disposition.RETRY),
    ],
)
def test_table(exc, cls, disp):
    verdict = classify(exc)
    assert (verdict.error_class, verdict.disposition) == (cls, disp)
