"""The notifier's own settings, from ``FLAGSCHED_NOTIFY_*`` environment variables
(Kafka and PostgreSQL come from the shared runtime settings)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from flagsched.runtime.errors import ConfigError
from flagsched.schemas.retry.policy import MAX_DELAY_S, Jitter, RetryPolicy


class NotifySettings(BaseSettings):
    """Every setting of `flagsched notifier` (README, "Configuration")."""

    model_config = SettingsConfigDict(env_prefix="FLAGSCHED_NOTIFY_", extra="ignore", frozen=True)

    config: Path | None = Field(default=None, description="the rules file, YAML or TOML")
    group_id: str = "flagsched-notifier"
    #: Plain http to loopback receivers; for tests only.
    allow_insecure: bool = False
    #: A PEM file of extra CAs to trust (a private CA in front of internal receivers).
    ca_file: Path | None = None
    http_timeout_s: float = Field(default=10.0, gt=0, le=120)
    max_response_bytes: int = Field(default=64 * 1024, ge=1024)
    #: Retries of one message: capped, jittered backoff (schemas.retry.policy) over hours.
    retry_base_s: float = Field(default=5.0, gt=0, le=MAX_DELAY_S)
    retry_multiplier: float = Field(default=2.0, ge=1)
    retry_cap_s: float = Field(default=1800.0, gt=0, le=MAX_DELAY_S)
    max_attempts: int = Field(default=30, ge=1, le=1000)
    #: The delivery loop's longest sleep between looks at the outbox.
    tick_s: float = Field(default=0.25, gt=0, le=60)
    #: How often the retry backlog is counted for rules with the ``backlog`` event.
    backlog_check_s: float = Field(default=30.0, gt=0)
    #: Breaker changes older than this when first read (a restart) are not announced.
    breaker_max_age_s: float = Field(default=600.0, gt=0)

    def retry_policy(self) -> RetryPolicy:
        """The policy the outbox plans retries with (equal jitter: never 0 s)."""
        return RetryPolicy(
            max_retries=self.max_attempts - 1,
            base_s=self.retry_base_s,
            multiplier=self.retry_multiplier,
            cap_s=self.retry_cap_s,
            floor_s=min(1.0, self.retry_base_s),
            jitter=Jitter.EQUAL,
        )


def load_notify_settings(**overrides: Any) -> NotifySettings:
    """From the environment; a bad value is a ConfigError naming the variable."""
    try:
        return NotifySettings(**overrides)
    except SettingsError as exc:
        # A list setting that is not JSON: pydantic-settings names the field only, and
        # chains the decoder's error.
        found = re.search(r'field "(\w+)"', str(exc))
        name = f"FLAGSCHED_NOTIFY_{found[1].upper()}" if found else "a list setting"
        raise ConfigError(f"invalid configuration: {name}: not valid JSON") from None
    except ValidationError as exc:
        parts = [
            f"FLAGSCHED_NOTIFY_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}"
            for e in exc.errors()
        ]
        # Not chained: pydantic's own text quotes each input, and an input may be a secret
        # (a URL with credentials, a key pasted into the wrong variable).
        raise ConfigError("invalid configuration: " + "; ".join(parts)) from None
