"""The admin API's own settings, read from ``FLAGSCHED_ADMIN_*`` (and a few shared)
environment variables; units are in the names and a bad value names its variable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from flagsched.runtime.errors import ConfigError

#: Bodies larger than this are refused with 413 before they are parsed.
DEFAULT_MAX_BODY_BYTES = 64 * 1024


class AdminSettings(BaseSettings):
    """How the admin API listens, authenticates and bounds its bulk actions."""

    model_config = SettingsConfigDict(env_prefix="FLAGSCHED_", extra="ignore", frozen=True)

    admin_addr: str = Field(default="127.0.0.1", description="address the API binds to")
    admin_port: int = Field(default=8080, ge=0, le=65535, description="0: a free port")
    admin_tokens_file: Path | None = Field(
        default=None, description="static API tokens, stored hashed (flagsched admin token)"
    )
    admin_oidc_issuer: str | None = Field(default=None, description="expected `iss` of JWTs")
    admin_oidc_audience: str | None = Field(default=None, description="expected `aud` of JWTs")
    admin_oidc_jwks_url: str | None = Field(default=None, description="JWKS URL of the issuer")
    admin_oidc_jwks_file: Path | None = Field(default=None, description="JWKS as a local file")
    admin_oidc_role_claim: str = Field(default="flagsched_role")
    admin_oidc_prefixes_claim: str = Field(default="flagsched_prefixes")
    admin_oidc_algorithms: tuple[str, ...] = ("RS256", "ES256")
    admin_oidc_leeway_s: float = Field(default=30.0, ge=0, le=600)
    admin_max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1024)
    admin_conflict_window_s: float = Field(
        default=3600.0, ge=0, description="other live schedules this close in time conflict"
    )
    admin_redrive_max: int = Field(default=10_000, ge=1, description="largest redrive allowed")
    admin_redrive_rate_per_s: float = Field(
        default=100.0, gt=0, le=10_000, description="default schedules re-armed per second"
    )
    admin_outbox_poll_s: float = Field(default=1.0, gt=0, le=60)
    admin_pool_max: int = Field(default=8, ge=1, le=200)
    admin_bulk_max: int = Field(
        default=10_000, ge=1, description="most schedules one bulk cancel or retry may match"
    )
    admin_bulk_batch: int = Field(
        default=100, ge=1, le=5000, description="schedules per bulk-action transaction"
    )
    # The web UI (ui/, docs/admin-ui.md).
    admin_ui_session_ttl_s: float = Field(
        default=8 * 3600.0, gt=0, le=30 * 86400, description="a UI session's lifetime"
    )
    admin_ui_origins: tuple[str, ...] = Field(
        default=(),
        description="origins allowed on the UI's unsafe methods; empty: the request's own",
    )
    admin_ui_oidc_client_id: str | None = Field(default=None, description="the UI's client id")
    admin_ui_oidc_client_secret: SecretStr | None = Field(
        default=None, description="its secret, if the provider gave one (else a public client)"
    )
    admin_ui_oidc_authorize_url: str | None = Field(default=None)
    admin_ui_oidc_token_url: str | None = Field(default=None)
    admin_ui_oidc_redirect_url: str | None = Field(
        default=None, description="this UI's callback, e.g. https://admin.example/ui/login/callback"
    )
    admin_ui_oidc_scopes: str = Field(default="openid profile")
    admin_ui_oidc_timeout_s: float = Field(default=10.0, gt=0, le=120)
    trace_url_template: str | None = Field(
        default=None, description="link to a trace, with {trace_id}, e.g. https://t/{trace_id}"
    )

    def jwt_enabled(self) -> bool:
        """Whether bearer JWTs are accepted (an issuer, an audience and a key source)."""
        return bool(
            self.admin_oidc_issuer
            and self.admin_oidc_audience
            and (self.admin_oidc_jwks_url or self.admin_oidc_jwks_file)
        )

    def ui_oidc_enabled(self) -> bool:
        """Whether the UI offers the OIDC login (its client, its endpoints, and the keys
        and issuer the API uses for JWTs, which verify the id token too)."""
        return bool(
            self.admin_ui_oidc_client_id
            and self.admin_ui_oidc_authorize_url
            and self.admin_ui_oidc_token_url
            and self.admin_ui_oidc_redirect_url
            and self.admin_oidc_issuer
            and (self.admin_oidc_jwks_url or self.admin_oidc_jwks_file)
        )

    def trace_url(self, trace_id: str | None) -> str | None:
        """The link to ``trace_id`` built from ``FLAGSCHED_TRACE_URL_TEMPLATE``."""
        if not trace_id or not self.trace_url_template:
            return None
        return self.trace_url_template.replace("{trace_id}", trace_id)


def load_admin_settings(**overrides: Any) -> AdminSettings:
    """Build admin settings from the environment; a bad value raises ConfigError naming it."""
    try:
        return AdminSettings(**overrides)
    except ValidationError as exc:
        parts = [
            f"FLAGSCHED_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        ]
        raise ConfigError("invalid configuration: " + "; ".join(parts)) from exc
