"""Sending a rendered request through the SSRF guard with httpx: no redirects, no
proxies from the environment, timeouts, and a cap on the response read."""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx

from flagsched.notifier.errors import Unreachable
from flagsched.notifier.guard import Guard
from flagsched.notifier.sinks.base import Request

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Response:
    """What came back: status, headers (lower-case names) and at most the capped body."""

    status: int
    headers: dict[str, str]
    body: bytes


class Transport:
    """One httpx client for every sink. ``ca_file`` adds trusted CAs to the system's
    (a private CA); ``transport`` (an httpx transport) is for tests that must see that
    nothing was sent."""

    def __init__(
        self,
        guard: Guard,
        *,
        timeout_s: float = 10.0,
        max_response_bytes: int = 64 * 1024,
        transport: httpx.BaseTransport | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.guard = guard
        self._cap = max_response_bytes
        verify = ssl.create_default_context()
        if ca_file is not None:
            verify.load_verify_locations(cafile=str(ca_file))
        self._client = httpx.Client(
            verify=verify,
            follow_redirects=False,
            trust_env=False,  # a proxy from the environment would bypass the address check
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            headers={"user-agent": "flagsched-notifier"},
        )

    def send(self, request: Request) -> Response:
        """Check, then send; Refused (before any connection) or Unreachable."""
        target = self.guard.check(request.url)
        headers = {**request.headers, "host": target.url.netloc.decode("ascii")}
        extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
        try:
            with self._client.stream(
                request.method,
                target.connect_url,
                content=request.body,
                headers=headers,
                extensions=extensions,
            ) as resp:
                body = bytearray()
                for chunk in resp.iter_bytes():
                    body += chunk[: self._cap - len(body)]
                    if len(body) >= self._cap:
                        break  # the rest is not read: a receiver cannot make us buffer it
                return Response(
                    resp.status_code,
                    {k.lower(): v for k, v in resp.headers.items()},
                    bytes(body),
                )
        except httpx.TransportError as exc:
            raise Unreachable(f"{target.host}: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()
