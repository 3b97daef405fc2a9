"""Where the services are: the two values every flagsched process needs."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from flagsched.runtime.db.dsn import redact_dsn

KAFKA_ENV = "FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS"
DATABASE_ENV = "FLAGSCHED_DATABASE_URL"


@dataclass(frozen=True)
class Endpoints:
    """Kafka bootstrap servers (``host:port[,host:port]``) and a libpq database URL.

    ``repr`` shows the URL redacted; :meth:`export_lines` carries it whole, for a shell.
    """

    kafka_bootstrap_servers: str
    database_url: str

    def __repr__(self) -> str:
        return (
            f"Endpoints(kafka_bootstrap_servers={self.kafka_bootstrap_servers!r},"
            f" database_url={redact_dsn(self.database_url)!r})"
        )

    def as_env(self) -> dict[str, str]:
        """The endpoints as ``FLAGSCHED_*`` environment variables."""
        return {KAFKA_ENV: self.kafka_bootstrap_servers, DATABASE_ENV: self.database_url}

    def export_lines(self) -> list[str]:
        """Shell ``export`` lines, safe to ``eval``: the values themselves, a password
        included, since the shell needs them (stdout only, never a log line)."""
        return [f"export {name}={shlex.quote(value)}" for name, value in self.as_env().items()]
