"""A tiny but real OpenID Connect provider on loopback, for the UI's OIDC login tests:
an HTTP server with ``/authorize`` (approves the configured user at once and redirects
back with a one-time code), ``/token`` (authorization code grant with PKCE ``S256``
checked, returns an RS256-signed id token) and ``/jwks``."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass
class Provider:
    """The provider's state: who logs in, the codes issued, what it was asked."""

    host: str
    port: int = 0
    client_id: str = "flagsched-ui"
    user: dict[str, Any] = field(
        default_factory=lambda: {"sub": "alice", "flagsched_role": "operator"}
    )
    key: Any = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)

    @property
    def issuer(self) -> str:
        """The issuer URL (also the base of its endpoints)."""
        return f"http://{self.host}:{self.port}"

    def jwks(self) -> dict[str, Any]:
        """The public key as a JWKS."""
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [jwk | {"kid": "k1", "use": "sig", "alg": "RS256"}]}

    def id_token(self, nonce: str) -> str:
        """A signed id token for the configured user."""
        now = datetime.now(UTC)
        claims = {
            "iss": self.issuer,
            "aud": self.client_id,
            "iat": now,
            "exp": now + timedelta(minutes=5),
            "nonce": nonce,
        } | self.user
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "k1"})


def _handler(provider: Provider) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/jwks":
                self._json(200, provider.jwks())
                return
            if url.path != "/authorize":
                self._json(404, {"error": "not_found"})
                return
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            provider.authorize_requests.append(q)
            if q.get("client_id") != provider.client_id or q.get("code_challenge_method") != "S256":
                self._json(400, {"error": "invalid_request"})
                return
            code = secrets.token_urlsafe(16)
            provider.codes[code] = {
                "challenge": q["code_challenge"],
                "nonce": q.get("nonce", ""),
                "redirect_uri": q["redirect_uri"],
            }
            self.send_response(302)
            self.send_header(
                "Location", q["redirect_uri"] + "?" + urlencode({"code": code, "state": q["state"]})
            )
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            provider.token_requests.append(form)
            issued = provider.codes.pop(form.get("code", ""), None)  # one use only
            if urlsplit(self.path).path != "/token" or issued is None:
                self._json(400, {"error": "invalid_grant"})
                return
            digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
            challenge = base64.urlsafe_b64encode(digest).decode().rstrip("=")
            if (
                challenge != issued["challenge"]
                or form.get("redirect_uri") != issued["redirect_uri"]
                or form.get("client_id") != provider.client_id
                or form.get("grant_type") != "authorization_code"
            ):
                self._json(400, {"error": "invalid_grant"})
                return
            self._json(
                200,
                {
                    "access_token": secrets.token_urlsafe(16),
                    "token_type": "Bearer",
                    "expires_in": 300,
                    "id_token": provider.id_token(issued["nonce"]),
                },
            )

    return Handler


@contextlib.contextmanager
def running_provider(host: str = "localhost") -> Iterator[Provider]:
    """The provider on 127.0.0.1 and a free port, addressed as ``host`` (``localhost``:
    another site than the UI on 127.0.0.1, so the login crosses sites as in production)."""
    provider = Provider(host=host)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(provider))
    provider.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="oidc-provider", daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
