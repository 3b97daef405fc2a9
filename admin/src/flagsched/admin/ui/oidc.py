"""OIDC login for the UI: authorization code with PKCE (RFC 7636, ``S256``).

:func:`begin` stores the login under way (state, PKCE verifier, nonce and the hash of
a browser-binding cookie) in ``admin_ui_logins`` and returns the provider's authorize
URL; :func:`finish` takes the callback's ``code`` and ``state``, consumes that row
once, exchanges the code at the token endpoint and verifies the id token with the
API's own :class:`~flagsched.admin.api.auth.JwtVerifier` (issuer, JWKS, the client id
as audience, ``exp``) and its nonce. The role and prefixes come from the same claims
as for API JWTs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import jwt

from flagsched.admin.api.auth import JwtVerifier
from flagsched.admin.service.access import Actor
from flagsched.admin.settings import AdminSettings
from flagsched.admin.ui.sessions import digest
from flagsched.runtime.db.connect import DictConnection

log = logging.getLogger(__name__)

#: The cookie binding a login to the browser that began it (SameSite=Lax: it must come
#: back on the provider's top-level redirect to the callback).
BINDING_COOKIE = "__Host-flagsched_oidc"
#: How long a login may take at the provider.
LOGIN_TTL_S = 600


class LoginFailed(Exception):
    """The OIDC callback could not establish who the user is (said without secrets)."""


def _challenge(verifier: str) -> str:
    raw = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@dataclass(frozen=True)
class Begun:
    """A login under way: where to send the browser and the binding cookie's value."""

    authorize_url: str
    binding: str


def begin(conn: DictConnection, s: AdminSettings) -> Begun:
    """Start a login: store its secrets, return the authorize URL and binding."""
    state, binding = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    verifier, nonce = secrets.token_urlsafe(48), secrets.token_urlsafe(24)
    with conn.transaction():
        conn.execute("DELETE FROM admin_ui_logins WHERE expires_at < now()")
        conn.execute(
            "INSERT INTO admin_ui_logins (state_hash, browser_hash, code_verifier, nonce,"
            " expires_at) VALUES (%s, %s, %s, %s, %s)",
            (
                digest(state),
                digest(binding),
                verifier,
                nonce,
                datetime.now(UTC) + timedelta(seconds=LOGIN_TTL_S),
            ),
        )
    query = urlencode(
        {
            "response_type": "code",
            "client_id": s.admin_ui_oidc_client_id,
            "redirect_uri": s.admin_ui_oidc_redirect_url,
            "scope": s.admin_ui_oidc_scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": _challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    base = str(s.admin_ui_oidc_authorize_url)
    return Begun(base + ("&" if "?" in base else "?") + query, binding)


def _exchange(s: AdminSettings, code: str, verifier: str) -> dict[str, Any]:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": s.admin_ui_oidc_redirect_url,
        "client_id": s.admin_ui_oidc_client_id,
        "code_verifier": verifier,
    }
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    if s.admin_ui_oidc_client_secret is not None:  # a confidential client: HTTP Basic
        pair = f"{s.admin_ui_oidc_client_id}:{s.admin_ui_oidc_client_secret.get_secret_value()}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    request = urllib.request.Request(  # noqa: S310 (a configured https or loopback URL)
        str(s.admin_ui_oidc_token_url), data=urlencode(form).encode(), headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=s.admin_ui_oidc_timeout_s) as resp:  # noqa: S310
            body: dict[str, Any] = json.loads(resp.read(1 << 20))
    except urllib.error.HTTPError as exc:
        raise LoginFailed(f"the token endpoint answered {exc.code}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise LoginFailed(f"the token endpoint failed: {type(exc).__name__}") from exc
    return body


def finish(
    conn: DictConnection,
    s: AdminSettings,
    verifier: JwtVerifier,
    *,
    code: str,
    state: str,
    binding: str | None,
) -> Actor:
    """The actor of a callback; :class:`LoginFailed` when anything does not match."""
    row = conn.execute(
        "DELETE FROM admin_ui_logins WHERE state_hash = %s AND expires_at > now() RETURNING *",
        (digest(state),),
    ).fetchone()
    if row is None:
        raise LoginFailed("unknown or expired login state")
    if binding is None or not secrets.compare_digest(bytes(row["browser_hash"]), digest(binding)):
        raise LoginFailed("the login was started in another browser")
    tokens = _exchange(s, code, row["code_verifier"])
    id_token = tokens.get("id_token")
    if not isinstance(id_token, str):
        raise LoginFailed("the token endpoint returned no id_token")
    try:
        claims = verifier.claims(id_token, audience=s.admin_ui_oidc_client_id)
        if not secrets.compare_digest(str(claims.get("nonce", "")), row["nonce"]):
            raise LoginFailed("the id token's nonce does not match")
        actor = verifier.actor_of(claims)
    except (jwt.InvalidTokenError, jwt.PyJWKClientError) as exc:
        raise LoginFailed(f"the id token is not valid: {type(exc).__name__}") from exc
    log.info("oidc login of %s role=%s", actor.name, actor.role)
    return actor
