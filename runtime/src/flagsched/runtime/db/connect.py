"""Opening PostgreSQL connections with a bounded wait and a message naming the setting."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from flagsched.runtime.db.dsn import dsn_problem, redact_dsn
from flagsched.runtime.errors import ConfigError, ServiceUnavailable

DictConnection = psycopg.Connection[dict[str, Any]]


def connect(dsn: str, *, timeout_s: float = 10.0, autocommit: bool = False) -> DictConnection:
    """Connect with dict rows; raise ServiceUnavailable naming FLAGSCHED_DATABASE_URL.

    The message shows the DSN redacted (flagsched.runtime.db.dsn); a DSN libpq cannot
    parse is a ConfigError whose message hides the pieces libpq quotes.
    """
    problem = dsn_problem(dsn)
    if problem is not None:
        raise ConfigError(f"FLAGSCHED_DATABASE_URL is not a valid DSN: {problem}")
    try:
        return psycopg.connect(
            dsn,
            autocommit=autocommit,
            row_factory=dict_row,
            connect_timeout=max(1, int(timeout_s)),
            application_name="flagsched",
        )
    except psycopg.Error as exc:
        raise ServiceUnavailable(
            f"cannot connect to PostgreSQL at FLAGSCHED_DATABASE_URL={redact_dsn(dsn)}: {exc}"
        ) from exc
