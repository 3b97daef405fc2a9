"""The rules file (``FLAGSCHED_NOTIFY_CONFIG``, YAML or TOML), validated at start.

A bad file stops the notifier with a message that names the key, e.g.
``rules.0.sinks: unknown sink 'pager'``. Secrets (Slack webhook URLs, routing keys,
API keys, webhook signing secrets) are ``SecretStr`` and may be written as
``${ENV_VAR}`` so that the file itself holds none.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from flagsched.runtime.errors import ConfigError
from flagsched.schemas.error_classes import ErrorClass
from flagsched.schemas.events import Priority
from flagsched.schemas.headers import DeadLetterReason

_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_NAME = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


def _from_env(value: Any) -> Any:
    """``${NAME}`` reads the secret from the environment; anything else is literal."""
    if isinstance(value, str) and (match := _ENV_REF.match(value)):
        if match[1] not in os.environ:
            raise ValueError(f"environment variable {match[1]} is not set")
        return os.environ[match[1]]
    return value


Secret = Annotated[SecretStr, BeforeValidator(_from_env)]


def _whsec(secret: SecretStr) -> SecretStr:
    raw = secret.get_secret_value()
    if not raw.startswith("whsec_"):
        raise ValueError("a signing secret starts with whsec_")
    try:
        key = base64.b64decode(raw.removeprefix("whsec_"), validate=True)
    except binascii.Error as exc:
        raise ValueError("a signing secret is whsec_ then base64") from exc
    if not 24 <= len(key) <= 64:
        raise ValueError("a signing secret holds 24 to 64 random bytes")
    return secret


SigningSecret = Annotated[Secret, AfterValidator(_whsec)]


class EventKind(StrEnum):
    """What a rule can match: the notifier's view of lifecycle, dead-letter and control
    records (docs/notifications.md, "Events")."""

    DEAD_LETTERED = "dead_lettered"
    RETRY_SCHEDULED = "retry_scheduled"
    APPLIED_AFTER_RETRIES = "applied_after_retries"
    BREAKER_OPENED = "breaker_opened"
    BREAKER_CLOSED = "breaker_closed"
    BACKLOG = "backlog"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SlackSink(_Model):
    """A Slack incoming webhook (the URL is the secret)."""

    type: Literal["slack"]
    url: Secret
    #: Slack allows about one message per second per webhook.
    min_interval_s: float = Field(default=1.0, ge=0)


class PagerDutySink(_Model):
    """PagerDuty Events API v2."""

    type: Literal["pagerduty"]
    routing_key: Secret
    url: str = "https://events.pagerduty.com/v2/enqueue"
    min_interval_s: float = Field(default=0.0, ge=0)


class OpsgenieSink(_Model):
    """Opsgenie Alert API (Atlassian ends Opsgenie support in April 2027)."""

    type: Literal["opsgenie"]
    api_key: Secret
    url: str = "https://api.opsgenie.com/v2/alerts"
    min_interval_s: float = Field(default=0.0, ge=0)


class WebhookSink(_Model):
    """A generic endpoint, signed per the Standard Webhooks spec."""

    type: Literal["webhook"]
    url: str
    #: ``whsec_<base64>``; the first signs, and during a rotation every one listed signs.
    secrets: Annotated[list[SigningSecret], Field(min_length=1, max_length=5)]
    min_interval_s: float = Field(default=0.0, ge=0)


Sink = Annotated[
    SlackSink | PagerDutySink | OpsgenieSink | WebhookSink, Field(discriminator="type")
]


class Rule(_Model):
    """Which events go where, and how often.

    Empty filters match everything. Events of one rule and kind that arrive close
    together go out as one digest per sink: the first after ``group_wait_s``, the next
    no sooner than ``group_interval_s`` later (Alertmanager's group_wait and
    group_interval). ``dedup_window_s`` drops a repeat of the same event kind for the
    same schedule within the window; ``rate_limit_per_min`` bounds the messages a
    rule sends a sink per minute (held events join the next digest: nothing is lost).
    """

    name: Annotated[str, Field(pattern=_NAME)]
    events: Annotated[list[EventKind], Field(min_length=1)]
    reasons: list[DeadLetterReason] = []
    priorities: list[Priority] = []
    flag_keys: list[Annotated[str, Field(min_length=1, max_length=200)]] = []
    error_classes: list[ErrorClass] = []
    sinks: Annotated[list[str], Field(min_length=1)]
    dedup_window_s: float = Field(default=3600.0, ge=0)
    group_wait_s: float = Field(default=10.0, ge=0, le=3600)
    group_interval_s: float = Field(default=60.0, ge=0, le=24 * 3600)
    rate_limit_per_min: int = Field(default=6, ge=1)
    #: ``backlog``: more schedules than this waiting for a retry (status ``retrying``).
    backlog_over: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _backlog_threshold(self) -> Rule:
        if EventKind.BACKLOG in self.events and self.backlog_over is None:
            raise ValueError("backlog_over: the backlog event needs a threshold")
        return self


class Links(_Model):
    """Where a notification links to; ``{schedule_id}``, ``{flag_key}`` and
    ``{trace_id}`` are filled in."""

    admin_url: str | None = None
    trace_url: str | None = None


class Network(_Model):
    """Exceptions to the SSRF guard: networks a sink may resolve to although they are
    private, loopback or link-local (cloud metadata addresses are never allowed)."""

    allow: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []


class NotifyConfig(_Model):
    """The whole rules file."""

    source: Annotated[str, Field(min_length=1, max_length=100)] = "flagsched"
    links: Links = Links()
    network: Network = Network()
    sinks: dict[Annotated[str, Field(pattern=_NAME)], Sink]
    rules: Annotated[list[Rule], Field(min_length=1)]

    @model_validator(mode="after")
    def _sinks_known(self) -> NotifyConfig:
        names = set()
        for i, rule in enumerate(self.rules):
            if rule.name in names:
                raise ValueError(f"rules.{i}.name: {rule.name!r} is used twice")
            names.add(rule.name)
            for j, sink in enumerate(rule.sinks):
                if sink not in self.sinks:
                    raise ValueError(
                        f"rules.{i}.sinks.{j}: unknown sink {sink!r}"
                        f" (defined: {', '.join(sorted(self.sinks)) or 'none'})"
                    )
        return self

    def rule(self, name: str) -> Rule:
        """The rule called ``name`` (KeyError if the file no longer has it)."""
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(name)


def parse_config(data: Any, *, origin: str = "FLAGSCHED_NOTIFY_CONFIG") -> NotifyConfig:
    """Validate parsed YAML/TOML; ConfigError names each offending key."""
    try:
        return NotifyConfig.model_validate(data)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}" if loc else msg)
        # Not chained: pydantic's own text quotes each input, and the rules file holds
        # the sinks' secrets (webhook URLs, routing keys, signing secrets).
        raise ConfigError(f"{origin}: " + "; ".join(parts)) from None


def _where(exc: Exception) -> str:
    """The line and column of a YAML or TOML syntax error, never the text there."""
    mark = getattr(exc, "problem_mark", None)  # PyYAML
    if mark is not None:
        return f" at line {mark.line + 1}, column {mark.column + 1}"
    line, column = getattr(exc, "lineno", None), getattr(exc, "colno", None)  # tomllib 3.14+
    if line is not None:
        return f" at line {line}, column {column}"
    found = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))  # tomllib's message
    return f" at line {found[1]}, column {found[2]}" if found else ""


def load_config(path: Path) -> NotifyConfig:
    """Read the rules file: ``.toml`` is TOML, ``.yaml``/``.yml`` YAML."""
    origin = f"FLAGSCHED_NOTIFY_CONFIG={path}"
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigError(f"{origin}: the file must end in .yaml, .yml or .toml")
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"{origin}: cannot read: {exc.strerror}") from exc
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        # Where, not what: a parser's message may quote the offending line, a secret's.
        raise ConfigError(f"{origin}: not valid {path.suffix[1:].upper()}{_where(exc)}") from None
    return parse_config(data, origin=origin)
