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
    #: Kafka clients retry a broker they lost after a delay that doubles with every
    #: failed attempt, up to this (with ±20 % jitter). kafka-python's own ceiling is
    #: 30 s: after a broker outage of 14 s its next attempt came up to 12 s after the
    #: broker was back, and every client (dispatcher, each lane, each producer) waited
    #: on its own (docs/reliability.md, "What the chaos runs found", 9). 1 s is the Java
    #: client's default; a lower one only costs a connection attempt per interval.
    kafka_reconnect_backoff_max_ms: int = Field(default=1000, ge=50, le=60000)
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
    #: Must equal ``due_partitions`` (checked below): one flag, one worker.
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
    #: Time budget: retry only while the first failure is younger than this (unset: the
    #: count alone bounds retries). Error classes may set their own (lock_contention: 300).
    max_retry_duration_s: float | None = Field(default=None, gt=0, le=MAX_DELAY_S)

    # --- dispatcher --------------------------------------------------------------
    dispatch_batch_size: int = Field(default=500, ge=1)
    dispatch_poll_interval_s: float = Field(default=1.0, gt=0)
    dispatch_stuck_after_s: float = Field(default=300.0, gt=0)
    #: Pre-dispatch: normal schedules due within this window are published ahead of
    #: time into the delay tier that fits and held by workers until due (0: off).
    dispatch_lookahead_s: float = Field(default=30.0, ge=0)

    # --- retention (`flagsched cleanup`) --------------------------------------------
    #: Days a terminal schedule is kept after it finished, per status; -1: for ever.
    retention_applied_days: float = Field(default=30.0)
    retention_superseded_days: float = Field(default=7.0)
    retention_cancelled_days: float = Field(default=7.0)
    retention_dead_days: float = Field(default=90.0)
    #: Rows deleted per transaction (at most 1,000: short transactions, short locks).
    cleanup_batch_size: int = Field(default=1000, ge=1, le=1000)
    #: `flagsched cleanup --every-s` default: seconds between runs of the periodic task.
    cleanup_interval_s: float = Field(default=3600.0, gt=0)

    # --- worker ------------------------------------------------------------------
    group_id: str = DEFAULT_GROUP_ID
    #: The worker's identity (logs, attempt rows, transactional id) and, with
    #: ``static_membership``, its Kafka group instance id: a worker restarted with the same
    #: id takes its partitions back without a rebalance. Unset: host-pid-random, dynamic.
    worker_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,200}$")
    static_membership: bool = True
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
    #: Failure detection: a member not heard from for this long is removed and its
    #: partitions move. Shorter detects a crash sooner but expels a worker whose heartbeats
    #: stop for that long (GC pause, CPU starvation, a network blip). The broker's
    #: group.min.session.timeout.ms (default 6000) is the floor.
    session_timeout_ms: int = Field(default=6000, ge=1000)
    #: How often each consumer heartbeats (from kafka-python's IO thread, not the loop). A
    #: member learns of a rebalance on its next heartbeat: this bounds how fast a graceful
    #: leave or a join is acted on, at one small request per interval per consumer.
    heartbeat_interval_ms: int = Field(default=500, ge=50)
    #: The longest a loop turn may take before the client leaves the group on its own, and
    #: the rebalance timeout: how long the broker waits for every member to rejoin.
    max_poll_interval_ms: int = Field(default=30000, ge=1000)
    #: ``cooperative-sticky``: a rebalance moves only the partitions that change owner and
    #: survivors keep consuming theirs (KIP-429); ``range``: eager, every member pauses.
    partition_assignment: Literal["cooperative-sticky", "range"] = "cooperative-sticky"
    #: A worker killed inside a transaction blocks read_committed readers of the
    #: partitions it wrote to (also partitions other workers own) until the broker aborts
    #: it after this long (checked every transaction.abort.timed.out.transaction.cleanup
    #: .interval.ms), or until a worker with the same id starts. A transaction spans one
    #: batch's publish and commit, not its database work; a longer one is aborted and the
    #: batch replayed.
    transaction_timeout_ms: int = Field(default=5000, ge=1000)
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

    @field_validator(
        "retention_applied_days",
        "retention_superseded_days",
        "retention_cancelled_days",
        "retention_dead_days",
    )
    @classmethod
    def _retention(cls, v: float) -> float:
        if v != -1 and not 0 <= v <= 36500:
            raise ValueError("a retention is -1 (keep for ever) or 0 to 36500 days")
        return v

    def retention_days(self) -> dict[str, float | None]:
        """Retention per terminal status in days; ``None`` keeps that status for ever."""
        days = {
            "applied": self.retention_applied_days,
            "superseded": self.retention_superseded_days,
            "cancelled": self.retention_cancelled_days,
            "dead": self.retention_dead_days,
        }
        return {status: None if d == -1 else d for status, d in days.items()}

    @model_validator(mode="after")
    def _cap_above_floor(self) -> Settings:
        if self.backoff_cap_s < self.backoff_floor_s:
            raise ValueError("backoff_cap_s must not be below backoff_floor_s")
        if self.backoff_cap_s < self.backoff_base_s:
            raise ValueError("backoff_cap_s must not be below backoff_base_s")
        if self.breaker_probe_cap_s < self.breaker_probe_base_s:
            raise ValueError("breaker_probe_cap_s must not be below breaker_probe_base_s")
        return self

    @model_validator(mode="after")
    def _membership_timeouts(self) -> Settings:
        # Kafka's own rule of thumb: three heartbeats fit in a session, so one lost
        # heartbeat does not expel a healthy member.
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError(
                "FLAGSCHED_HEARTBEAT_INTERVAL_MS must be at most a third of"
                " FLAGSCHED_SESSION_TIMEOUT_MS"
                f" ({self.heartbeat_interval_ms} > {self.session_timeout_ms} / 3)"
            )
        if self.max_poll_interval_ms < self.session_timeout_ms:
            raise ValueError(
                "FLAGSCHED_MAX_POLL_INTERVAL_MS must not be below FLAGSCHED_SESSION_TIMEOUT_MS"
            )
        return self

    @model_validator(mode="after")
    def _tiers_copartitioned(self) -> Settings:
        # A flag's records are keyed by the flag, so they share a partition number in
        # the due topic and every tier only when the counts are equal; the assignor
        # then gives that partition of each topic to one worker, which applies the
        # flag's schedules one batch after another. With other counts two workers
        # attempt one flag at once and the loser's healthy schedule burns an attempt
        # on lock_contention (docs/architecture.md, "One flag, one worker").
        if self.tier_partitions != self.due_partitions:
            raise ValueError(
                "FLAGSCHED_TIER_PARTITIONS must equal FLAGSCHED_DUE_PARTITIONS"
                f" ({self.tier_partitions} != {self.due_partitions}): a flag's due and"
                " retry records must reach the same worker"
            )
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
            max_retry_duration_s=self.max_retry_duration_s,
        )

    def kafka_client_config(self) -> dict[str, Any]:
        """Connection and security options shared by every kafka-python client."""
        if not self.kafka_bootstrap_servers:
            raise ConfigError("FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS is not set")
        cfg: dict[str, Any] = {
            "bootstrap_servers": self.kafka_bootstrap_servers.split(","),
            "security_protocol": self.kafka_security_protocol,
            "reconnect_backoff_max_ms": self.kafka_reconnect_backoff_max_ms,
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
