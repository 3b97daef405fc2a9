"""Real HTTP receivers on loopback that implement each vendor's side of the contract.

Each receiver checks what arrives the way its vendor does (required fields and
limits; the Standard Webhooks signature with the independent ``standardwebhooks``
package) and answers like the vendor: an invalid request gets the vendor's 4xx and
is recorded in ``problems``. A script of responses (429 with Retry-After, 500, 410)
can be queued; :meth:`Receiver.down` stops listening and :meth:`Receiver.up` listens
again on the same port.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    """One request as it arrived."""

    at: float
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)


Check = Callable[[str, dict[str, str], bytes], list[str]]


def slack_contract(path: str, headers: dict[str, str], body: bytes) -> list[str]:
    """Slack incoming webhooks: JSON with ``text`` and Block Kit limits."""
    problems = []
    msg = json.loads(body)
    if not isinstance(msg.get("text"), str) or not msg["text"]:
        problems.append("text fallback missing")
    blocks = msg.get("blocks", [])
    if len(blocks) > 50:
        problems.append(f"{len(blocks)} blocks > 50")
    for b in blocks:
        if b["type"] == "header" and len(b["text"]["text"]) > 150:
            problems.append("header text > 150")
        if b["type"] == "section":
            if len(b.get("text", {}).get("text", "")) > 3000:
                problems.append("section text > 3000")
            if len(b.get("fields", [])) > 10:
                problems.append("more than 10 fields")
    return problems


def pagerduty_contract(path: str, headers: dict[str, str], body: bytes) -> list[str]:
    """Events API v2: POST /v2/enqueue with the required fields and limits."""
    problems = []
    if path != "/v2/enqueue":
        problems.append(f"path {path}")
    e = json.loads(body)
    if not e.get("routing_key"):
        problems.append("routing_key missing")
    if e.get("event_action") not in ("trigger", "acknowledge", "resolve"):
        problems.append(f"event_action {e.get('event_action')!r}")
    if len(e.get("dedup_key", "")) > 255 or not e.get("dedup_key"):
        problems.append("dedup_key missing or > 255")
    if e.get("event_action") == "trigger":
        p = e.get("payload", {})
        if not p.get("summary") or len(p["summary"]) > 1024:
            problems.append("payload.summary missing or > 1024")
        if not p.get("source"):
            problems.append("payload.source missing")
        if p.get("severity") not in ("critical", "error", "warning", "info"):
            problems.append(f"payload.severity {p.get('severity')!r}")
        for link in e.get("links", []):
            if "href" not in link:
                problems.append("link without href")
    return problems


def opsgenie_contract(path: str, headers: dict[str, str], body: bytes) -> list[str]:
    """Alert API: GenieKey auth; create with message <= 130 and P1-P5; close by alias."""
    problems = []
    if not headers.get("authorization", "").startswith("GenieKey "):
        problems.append("Authorization: GenieKey missing")
    a = json.loads(body)
    if path == "/v2/alerts":
        if not a.get("message") or len(a["message"]) > 130:
            problems.append("message missing or > 130")
        if len(a.get("alias", "")) > 512:
            problems.append("alias > 512")
        if a.get("priority") not in ("P1", "P2", "P3", "P4", "P5"):
            problems.append(f"priority {a.get('priority')!r}")
        if not all(isinstance(v, str) for v in a.get("details", {}).values()):
            problems.append("details values must be strings")
    elif not (path.startswith("/v2/alerts/") and path.endswith("/close?identifierType=alias")):
        problems.append(f"path {path}")
    return problems


def webhook_contract(*secrets: str) -> Check:
    """Standard Webhooks: the signature must verify with one of ``secrets`` (what this
    receiver knows), checked by the standardwebhooks package."""

    def check(path: str, headers: dict[str, str], body: bytes) -> list[str]:
        errors = []
        for secret in secrets:
            try:
                Webhook(secret).verify(body, headers)
                break
            except WebhookVerificationError as exc:
                errors.append(str(exc))
        else:
            return [f"signature: {errors}"]
        payload = json.loads(body)
        if set(payload) != {"type", "timestamp", "data"}:
            return [f"payload keys {sorted(payload)}"]
        return []

    return check


_ACCEPTED = {"slack": (200, b"ok"), "pagerduty": (202, b'{"status":"success"}')}


@dataclass
class Receiver:
    """A vendor's endpoint on 127.0.0.1."""

    vendor: str
    check: Check
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def respond(self, *script: tuple[int, dict[str, str]]) -> None:
        """Answer the next requests with these (status, headers), then accept again."""
        with self._lock:
            self.script.extend(script)

    def _answer(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            if self.script:
                status, extra = self.script.pop(0)
                return status, extra, b'{"error":"scripted"}'
        problems = self.check(path, headers, body)
        if problems:
            with self._lock:
                self.problems.extend(problems)
            return (400 if self.vendor != "opsgenie" else 422), {}, json.dumps(problems).encode()
        status, reply = _ACCEPTED.get(self.vendor, (202 if self.vendor == "opsgenie" else 204, b""))
        return status, {}, reply

    def up(self) -> None:
        """Listen (again, on the same port once it has one)."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, extra, reply = receiver._answer(self.path, headers, body)
                with receiver._lock:
                    receiver.received.append(
                        Received(time.monotonic(), "POST", self.path, headers, body, status)
                    )
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        """Stop listening: connections are refused until :meth:`up`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def accepted(self) -> list[Received]:
        """Requests it accepted (2xx)."""
        with self._lock:
            return [r for r in self.received if 200 <= r.answered < 300]


def receivers(webhook_secrets: tuple[str, ...]) -> dict[str, Receiver]:
    """One receiver per vendor."""
    return {
        "slack": Receiver("slack", slack_contract),
        "pagerduty": Receiver("pagerduty", pagerduty_contract),
        "opsgenie": Receiver("opsgenie", opsgenie_contract),
        "webhook": Receiver("webhook", webhook_contract(*webhook_secrets)),
    }
