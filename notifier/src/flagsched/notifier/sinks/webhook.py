"""Generic webhooks signed per the Standard Webhooks spec.

Headers: ``webhook-id`` (the message id, the same on every retry),
``webhook-timestamp`` (this attempt's unix seconds) and ``webhook-signature``: one
``v1,<base64 HMAC-SHA256>`` per secret, space-separated, over ``id.timestamp.body``
with the key that follows ``whsec_`` (base64). Several secrets sign at once while one
rotates. The body is ``{type, timestamp, data}``. A 410 disables the endpoint.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime

from pydantic import SecretStr

from flagsched.notifier.config import NotifyConfig, WebhookSink
from flagsched.notifier.digest import Digest
from flagsched.notifier.sinks.base import Outcome, Request, Verdict, judge_http

#: Schedules described in full; every id is in data.schedule_ids.
DETAILED = 100


def sign(secrets: Sequence[SecretStr], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    sigs = []
    for secret in secrets:
        key = base64.b64decode(secret.get_secret_value().removeprefix("whsec_"))
        mac = hmac.new(key, content, hashlib.sha256).digest()
        sigs.append("v1," + base64.b64encode(mac).decode())
    return " ".join(sigs)


def payload(digest: Digest) -> dict[str, object]:
    """``{type, timestamp, data}``; ``type`` is ``flagsched.<kind>`` (``.resolved`` for a
    resolve)."""
    kind = f"flagsched.{digest.kind.value}" + (".resolved" if digest.action == "resolve" else "")
    first = min((n.occurred_at for n in digest.notices), default=digest.created_at)
    return {
        "type": kind,
        "timestamp": first.isoformat().replace("+00:00", "Z"),
        "data": {
            "rule": digest.rule,
            "dedup_key": digest.dedup_key,
            "summary": digest.summary(),
            "count": len(digest.notices),
            "schedule_ids": digest.schedule_ids,
            "events": [
                n.model_dump(mode="json", exclude_none=True) for n in digest.notices[:DETAILED]
            ],
        },
    }


def render(digest: Digest, sink: WebhookSink, config: NotifyConfig, now: datetime) -> Request:
    """The signed POST; the timestamp (and so the signature) is this attempt's."""
    req = Request.post_json(sink.url, payload(digest))
    msg_id = f"msg_{digest.message_id.hex}"
    ts = int(now.timestamp())
    headers = {
        **req.headers,
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(sink.secrets, msg_id, ts, req.body),
        "user-agent": f"flagsched-notifier ({config.source})",
    }
    return Request(req.method, req.url, req.body, headers, frozenset({"webhook-signature"}))


def judge(status: int, headers: dict[str, str], body: bytes) -> Verdict:
    """2xx delivered; 410 disables the endpoint; 408, 429 and 5xx retried."""
    if status == 410:
        return Verdict(Outcome.DISABLE, None, "410 Gone: the endpoint asked to be disabled")
    return judge_http(status, headers, body)
