"""Opening PostgreSQL connections with a bounded wait and a message naming the setting."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from flagsched.runtime.errors import ServiceUnavailable

DictConnection = psycopg.Connection[dict[str, Any]]


def connect(dsn: str, *, timeout_s: float = 10.0, autocommit: bool = False) -> DictConnection:
    """Connect with dict rows; raise ServiceUnavailable naming FLAGSCHED_DATABASE_URL."""
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
            f"cannot connect to PostgreSQL at FLAGSCHED_DATABASE_URL={_redact(dsn)}: {exc}"
        ) from exc


def _redact(dsn: str) -> str:
    """Hide a password in a URL-style DSN."""
    if "://" in dsn and "@" in dsn:
        scheme, rest = dsn.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else dsn
    return dsn
