"""Settings, read from ``FLAGSCHED_*`` environment variables.

Every duration carries its unit in its name. A bad value fails at start-up with
pydantic's message, which names the setting (see :func:`load_settings`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flagsched.runtime.db.dsn import dsn_problem
from flagsched.runtime.errors import ConfigError
from flagsched.schemas.error_message import ERROR_MESSAGE_MAX_BYTES
from flagsched.schemas.retry.policy import MAX_DELAY_S, Jitter, RetryPolicy
from flagsched.schemas.topics import (
    DEFAULT_GROUP_ID,
    DEFAULT_PARTITIONS,
    DEFAULT_PREFIX,
    DEFAULT_TIERS_S,
    TopicLayout,
)

JitterName = Literal["none", "full", "equal", "decorrelated"]


class Settings(BaseSettings):
    """All of flagsched's configuration; one instance is built by the CLI."""

    model_config = SettingsConfigDict(env_prefix="FLAGSCHED_", extra="ignore", frozen=True)

    # --- where the services are -------------------------------------------------
    kafka_bootstrap_servers: str | None = Field(
        default=None, description="host:port[,host:port]; unset means the local dev stack"
    )
    #: Secret: a DSN may carry a password (URL, key=value or ``?password=``); shown only
    #: redacted (flagsched.runtime.db.dsn), read with :meth:`require_database_url`.
    database_url: SecretStr | None = Field(
        default=None, description="libpq URL/DSN; unset means the local dev stack"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    connect_timeout_s: float = Field(default=10.0, gt=0)
    dev_home: Path = Field(
        default=Path.home() / ".cache" / "flagsched",
        description="where the local dev stack keeps jars, data and pid files",
    )
    dev_backend: Literal["local", "testcontainers"] = "local"

    # --- topics ------------------------------------------------------------------
    topic_prefix: str = Field(default=DEFAULT_PREFIX, pattern=r"^[A-Za-z0-9._-]{1,100}$")
    due_partitions: int = Field(default=DEFAULT_PARTITIONS, ge=1)
    #: As many as the due topic: with range assignment every worker that owns a due
    #: partition also owns a priority one, so critical work never waits on one busy worker.
    priority_partitions: int = Field(default=DEFAULT_PARTITIONS, ge=1)
    tier_partitions: int = Field(default=DEFAULT_PARTITIONS, ge=1)
    retry_tiers_s: tuple[float, ...] = DEFAULT_TIERS_S
    replication_factor: int = Field(default=1, ge=1)

    # --- retry policy defaults (overridable per schedule) -------------------------
    max_retries: int = Field(default=5, ge=0, le=1000)
    backoff_base_s: float = Field(default=2.0, gt=0, le=MAX_DELAY_S)
    backoff_multiplier: float = Field(default=2.0, ge=1.0)
    backoff_cap_s: float = Field(default=3600.0, gt=0, le=MAX_DELAY_S)
    backoff_floor_s: float = Field(default=0.0, ge=0, le=MAX_DELAY_S)
    jitter: JitterName = "full"

    # --- dispatcher --------------------------------------------------------------
    dispatch_batch_size: int = Field(default=500, ge=1)
    dispatch_poll_interval_s: float = Field(default=1.0, gt=0)
    dispatch_stuck_after_s: float = Field(default=300.0, gt=0)
    #: Pre-dispatch: normal schedules due within this window are published ahead of
    #: time into the delay tier that fits and held by workers until due (0: off).
    dispatch_lookahead_s: float = Field(default=30.0, ge=0)

    # --- worker ------------------------------------------------------------------
    group_id: str = DEFAULT_GROUP_ID
    worker_id: str | None = None
    max_poll_records: int = Field(default=500, ge=1)
    #: 0: a flag locked by another transaction is not waited for (lock_contention at once,
    #: retried through the tiers); > 0: a poll waits up to this long in all for such flags.
    apply_lock_timeout_ms: int = Field(default=0, ge=0)
    apply_statement_timeout_ms: int = Field(default=10000, ge=1)
    infra_pause_s: float = Field(default=2.0, gt=0)
    max_record_bytes: int = Field(default=64 * 1024, ge=1024)
    #: At most the contract's bound (schemas/error_message.py): a higher one could make
    #: a model refuse a message.
    error_message_max_bytes: int = Field(default=1024, ge=64, le=ERROR_MESSAGE_MAX_BYTES)
    session_timeout_ms: int = Field(default=10000, ge=1000)
    #: A worker killed inside a transaction blocks read_committed readers of the
    #: partitions it wrote to until the broker aborts it after this long.
    transaction_timeout_ms: int = Field(default=10000, ge=1000)
    startup_timeout_s: float = Field(default=120.0, gt=0)

    # --- telemetry ----------------------------------------------------------------
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="Prometheus /metrics port; unset: no endpoint"
    )
    metrics_addr: str = "127.0.0.1"
    tracing: Literal["off", "otel", "console", "jsonl"] = Field(
        default="otel",
        description="otel: as the OTEL_* variables say (nothing if none is set); see docs",
    )
    tracing_jsonl_path: Path | None = None

    # --- circuit breaker (database outages) ------------------------------------------
    breaker_failure_threshold: int = Field(default=3, ge=1)
    breaker_probe_base_s: float = Field(default=0.5, gt=0, le=MAX_DELAY_S)
    breaker_probe_cap_s: float = Field(default=10.0, gt=0, le=MAX_DELAY_S)
    breaker_stale_s: float = Field(default=60.0, gt=0)
    breaker_drain_rate_per_s: float = Field(default=200.0, gt=0)
    breaker_drain_s: float = Field(default=10.0, ge=0)

    @field_validator("database_url")
    @classmethod
    def _dsn_parses(cls, v: SecretStr | None) -> SecretStr | None:
        # Fail at start-up, not at the first attempt; the message hides what libpq quotes.
        problem = None if v is None else dsn_problem(v.get_secret_value())
        if problem is not None:
            raise ValueError(f"not a valid libpq DSN: {problem}")
        return v

    @field_validator("retry_tiers_s")
    @classmethod
    def _tiers_ascending(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v:
            raise ValueError("at least one retry tier is needed")
        if any(t <= 0 for t in v) or list(v) != sorted(set(v)):
            raise ValueError("tiers must be positive, distinct and ascending, e.g. [1,5,30]")
        return v

    @model_validator(mode="after")
    def _cap_above_floor(self) -> Settings:
        if self.backoff_cap_s < self.backoff_floor_s:
            raise ValueError("backoff_cap_s must not be below backoff_floor_s")
        return self

    def topic_layout(self) -> TopicLayout:
        """The topic layout these settings describe."""
        return TopicLayout(
            prefix=self.topic_prefix,
            tiers_s=self.retry_tiers_s,
            due_partitions=self.due_partitions,
            priority_partitions=self.priority_partitions,
            tier_partitions=self.tier_partitions,
        )

    def default_retry_policy(self) -> RetryPolicy:
        """The global default retry policy from the ``FLAGSCHED_*`` backoff settings."""
        return RetryPolicy(
            max_retries=self.max_retries,
            base_s=self.backoff_base_s,
            multiplier=self.backoff_multiplier,
            cap_s=self.backoff_cap_s,
            floor_s=self.backoff_floor_s,
            jitter=Jitter(self.jitter),
        )

    def kafka_client_config(self) -> dict[str, Any]:
        """Connection and security options shared by every kafka-python client."""
        if not self.kafka_bootstrap_servers:
            raise ConfigError("FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS is not set")
        cfg: dict[str, Any] = {
            "bootstrap_servers": self.kafka_bootstrap_servers.split(","),
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            cfg["sasl_mechanism"] = self.kafka_sasl_mechanism
            cfg["sasl_plain_username"] = self.kafka_sasl_username
            if self.kafka_sasl_password is not None:
                cfg["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        for key, path in (
            ("ssl_cafile", self.kafka_ssl_cafile),
            ("ssl_certfile", self.kafka_ssl_certfile),
            ("ssl_keyfile", self.kafka_ssl_keyfile),
        ):
            if path is not None:
                cfg[key] = str(path)
        return cfg

    def require_database_url(self) -> str:
        """The DSN (the secret itself: pass it to a client, never log it), or a
        ConfigError naming the setting."""
        dsn = self.database_url.get_secret_value() if self.database_url is not None else ""
        if not dsn:
            raise ConfigError("FLAGSCHED_DATABASE_URL is not set")
        return dsn

    def with_database_url(self, dsn: str) -> Settings:
        """A copy pointing at another database."""
        return self.model_copy(update={"database_url": dsn})

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """pydantic's copy, except that a DSN given as a plain string is wrapped as a secret:
        ``model_copy`` does not validate, and the copy's repr would show the password."""
        if update is not None and isinstance(update.get("database_url"), str):
            update = {**update, "database_url": SecretStr(update["database_url"])}
        return super().model_copy(update=update, deep=deep)


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, turning validation errors into ConfigError.

    The message names each offending setting by its environment variable.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        parts: list[str] = []
        for err in exc.errors():
            name = "_".join(str(p) for p in err["loc"]) or "settings"
            parts.append(f"FLAGSCHED_{name.upper()}: {err['msg']}")
        # Not chained: pydantic's own message quotes each input, secrets included.
        raise ConfigError("invalid configuration: " + "; ".join(parts)) from None
