"""Versioned, idempotent schema migrations (``flagsched db migrate``).

Files ``schemas/migrations/NNNN_name.sql`` are applied in order, each in its own
transaction, under an advisory lock so concurrent runners wait for each other.
A file whose checksum changed after it was applied is an error, not a silent skip.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

from flagsched.runtime.db.connect import connect
from flagsched.runtime.errors import MigrationError

log = logging.getLogger(__name__)

_LOCK_KEY = 0x666C6167  # "flag": serialises concurrent migrators
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One SQL file of the schema history."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """sha256 of the file's text."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    """All migrations shipped with the package, in version order."""
    found = []
    for entry in resources.files("flagsched.schemas").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)


def migrate(dsn: str, *, timeout_s: float = 10.0) -> list[int]:
    """Apply what is missing; return the versions applied by this call."""
    applied_now: list[int] = []
    with connect(dsn, timeout_s=timeout_s, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {
                int(str(r["version"])): str(r["checksum"])
                for r in conn.execute("SELECT version, checksum FROM schema_migrations")
            }
            for mig in available():
                if mig.version in done:
                    if done[mig.version] != mig.checksum:
                        raise MigrationError(
                            f"migration {mig.version:04d}_{mig.name} changed after it was applied"
                        )
                    continue
                with conn.transaction():
                    conn.execute(mig.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum)"
                        " VALUES (%s, %s, %s)",
                        (mig.version, mig.name, mig.checksum),
                    )
                log.info("applied migration %04d_%s", mig.version, mig.name)
                applied_now.append(mig.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
