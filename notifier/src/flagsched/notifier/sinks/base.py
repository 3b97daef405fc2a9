"""What a sink renders (a request) and how a response is judged (a verdict)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

#: A Retry-After beyond this is treated as this: a receiver cannot park a message for days.
MAX_RETRY_AFTER_S = 3600.0


@dataclass(frozen=True)
class Request:
    """An outgoing HTTP request. ``secret_headers`` are never logged."""

    method: str
    url: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    secret_headers: frozenset[str] = frozenset()

    @staticmethod
    def post_json(url: str, payload: Any, **headers: str) -> Request:
        """A JSON POST, serialised compactly (the bytes sent are the bytes signed)."""
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        return Request("POST", url, body, {"content-type": "application/json", **headers})


class Outcome(StrEnum):
    """What a response means for the message."""

    DELIVERED = "delivered"
    RETRY = "retry"  # later, with backoff (or Retry-After)
    PERMANENT = "permanent"  # the receiver refused it: retrying cannot help
    DISABLE = "disable"  # the endpoint is gone (410): stop sending to it


@dataclass(frozen=True)
class Verdict:
    """The outcome, the server's wait if it named one, and why."""

    outcome: Outcome
    retry_after_s: float | None = None
    reason: str = ""


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


def judge_http(status: int, headers: dict[str, str], body: bytes) -> Verdict:
    """The common reading: 2xx delivered; 408, 429 and 5xx retried (honouring
    Retry-After); a redirect (never followed) and other 4xx permanent."""
    snippet = body[:200].decode("utf-8", "replace")
    if 200 <= status < 300:
        return Verdict(Outcome.DELIVERED)
    if status in (408, 429) or status >= 500:
        return Verdict(Outcome.RETRY, retry_after_s(headers.get("retry-after")), f"{status}")
    return Verdict(Outcome.PERMANENT, None, f"{status} {snippet}".strip())


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
