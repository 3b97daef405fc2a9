"""Authentication and authorisation as a FastAPI dependency; deny by default.

A bearer token is either a static API token (``fsa_...``, checked against the hashed
file) or an OIDC / JWT access token (PyJWT: signature from the JWKS, ``iss``, ``aud``
and ``exp`` checked; the role and optional prefixes from configured claims). No or
bad token: 401. A role below what the action needs (service/access.py): 403.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import jwt
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from flagsched.admin.service.access import RANK, Actor
from flagsched.admin.service.tokens import PREFIX, TokenStore
from flagsched.admin.settings import AdminSettings

log = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="a static API token or an OIDC JWT")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class JwtVerifier:
    """Verifies JWTs with keys from a JWKS URL or file."""

    def __init__(self, settings: AdminSettings) -> None:
        self._s = settings
        self._client = (
            jwt.PyJWKClient(settings.admin_oidc_jwks_url, cache_keys=True, lifespan=300)
            if settings.admin_oidc_jwks_url
            else None
        )
        self._file_keys: dict[str, Any] = {}
        if settings.admin_oidc_jwks_file is not None:
            jwks = jwt.PyJWKSet.from_json(settings.admin_oidc_jwks_file.read_text("utf-8"))
            self._file_keys = {k.key_id or "": k for k in jwks.keys}

    def _key(self, token: str) -> Any:
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        kid = jwt.get_unverified_header(token).get("kid") or ""
        if kid not in self._file_keys:
            if len(self._file_keys) == 1 and not kid:
                return next(iter(self._file_keys.values())).key
            raise jwt.InvalidTokenError(f"no key {kid!r} in the JWKS file")
        return self._file_keys[kid].key

    def verify(self, token: str, *, audience: str | None = None) -> Actor:
        """The actor of a valid token (``aud`` must be ``audience``, by default the API's);
        ``jwt.InvalidTokenError`` otherwise."""
        return self.actor_of(self.claims(token, audience=audience))

    def claims(self, token: str, *, audience: str | None = None) -> dict[str, Any]:
        """The verified claims of ``token``: signature, ``iss``, ``aud``, ``exp``, ``sub``."""
        claims: dict[str, Any] = jwt.decode(
            token,
            self._key(token),
            algorithms=list(self._s.admin_oidc_algorithms),
            audience=audience or self._s.admin_oidc_audience,
            issuer=self._s.admin_oidc_issuer,
            leeway=self._s.admin_oidc_leeway_s,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
        return claims

    def actor_of(self, claims: dict[str, Any]) -> Actor:
        """The actor verified ``claims`` name: the role and prefixes from their claims."""
        role = claims.get(self._s.admin_oidc_role_claim)
        if role not in RANK:
            raise jwt.InvalidTokenError(f"claim {self._s.admin_oidc_role_claim!r} is not a role")
        prefixes = claims.get(self._s.admin_oidc_prefixes_claim) or []
        if not isinstance(prefixes, list) or not all(isinstance(p, str) for p in prefixes):
            raise jwt.InvalidTokenError(
                f"claim {self._s.admin_oidc_prefixes_claim!r} is not a list"
            )
        return Actor(name=f"oidc:{claims['sub']}", role=role, prefixes=tuple(prefixes))


class Authenticator:
    """Turns a request's bearer token into an :class:`Actor`, or refuses it."""

    def __init__(self, settings: AdminSettings) -> None:
        self.tokens = TokenStore(settings.admin_tokens_file)
        self.jwt = JwtVerifier(settings) if settings.jwt_enabled() else None
        # The UI's id tokens come from the same issuer and keys, with its client id as aud.
        self.id_tokens = JwtVerifier(settings) if settings.ui_oidc_enabled() else None

    def actor(self, token: str) -> Actor | None:
        """The caller of ``token``, or None if it is not valid."""
        if token.startswith(PREFIX):
            record = self.tokens.verify(token)
            if record is None:
                return None
            return Actor(name=f"token:{record.name}", role=record.role, prefixes=record.prefixes)
        if self.jwt is None:
            return None
        try:
            return self.jwt.verify(token)
        except (jwt.InvalidTokenError, jwt.PyJWKClientError, json.JSONDecodeError) as exc:
            log.info("rejected a bearer JWT: %s", type(exc).__name__)  # never the token
            return None


def require(action: str) -> Callable[..., Actor]:
    """A dependency that authenticates the caller and checks ``action`` against its role."""

    def dependency(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
    ) -> Actor:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(401, "a bearer token is required", headers=_CHALLENGE)
        auth: Authenticator = request.app.state.authenticator
        actor = auth.actor(credentials.credentials)
        if actor is None:
            raise HTTPException(401, "the bearer token is not valid", headers=_CHALLENGE)
        if not actor.allowed(action):
            raise HTTPException(403, f"role {actor.role} may not {action}")
        client = request.client.host if request.client else None
        return actor.with_request(
            request.state.request_id, request.headers.get("Idempotency-Key"), client
        )

    return dependency
