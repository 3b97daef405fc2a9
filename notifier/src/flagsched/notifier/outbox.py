"""Sending queued messages: one at a time, oldest due first, each under a row lock (so
several notifiers never send the same message at once), retried with the project's
backoff (schemas.retry.policy) or the receiver's Retry-After, over hours.

A message is sent only after every older unsent message with the same sink and
dedup key (a resolve never overtakes its trigger). A message whose sink answered 410
disables the endpoint: it and everything queued for it are ``disabled``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flagsched.notifier.config import EventKind, NotifyConfig
from flagsched.notifier.digest import Digest
from flagsched.notifier.errors import Refused, Unreachable
from flagsched.notifier.metrics import NotifierMetrics
from flagsched.notifier.notice import Notice
from flagsched.notifier.sinks import opsgenie, pagerduty, slack, webhook
from flagsched.notifier.sinks.base import Outcome, Request, Verdict
from flagsched.notifier.store import url_fingerprint
from flagsched.notifier.transport import Transport
from flagsched.runtime.db.connect import DictConnection
from flagsched.schemas.retry.policy import RetryPolicy, planned_delay_s

log = logging.getLogger(__name__)

_DUE = """
SELECT * FROM notification_messages m
 WHERE m.status IN ('queued', 'retrying') AND m.next_attempt_at <= %(now)s
   AND m.sink = ANY(%(sinks)s)
   AND NOT EXISTS (
       SELECT 1 FROM notification_messages o
        WHERE o.sink = m.sink AND o.dedup_key = m.dedup_key AND o.created_at < m.created_at
          AND o.status IN ('queued', 'retrying'))
 ORDER BY m.next_attempt_at, m.created_at
 LIMIT 1
 FOR UPDATE SKIP LOCKED
"""


def render(digest: Digest, sink_name: str, config: NotifyConfig, now: datetime) -> Request:
    """The vendor request for ``digest`` on ``sink_name``."""
    sink = config.sinks[sink_name]
    if sink.type == "slack":
        return slack.render(digest, sink, config)
    if sink.type == "pagerduty":
        return pagerduty.render(digest, sink, config)
    if sink.type == "opsgenie":
        return opsgenie.render(digest, sink, config)
    return webhook.render(digest, sink, config, now)


def judge(sink_type: str, status: int, headers: dict[str, str], body: bytes) -> Verdict:
    """The vendor's reading of a response."""
    module: Any = {"slack": slack, "pagerduty": pagerduty, "opsgenie": opsgenie}.get(
        sink_type, webhook
    )
    verdict: Verdict = module.judge(status, headers, body)
    return verdict


def digest_of(row: dict[str, Any]) -> Digest:
    """The message row as the digest it was queued from."""
    return Digest(
        message_id=row["id"],
        rule=row["rule"],
        kind=EventKind(row["kind"]),
        action=row["action"],
        dedup_key=row["dedup_key"],
        notices=tuple(Notice.model_validate(n) for n in row["notices"]),
        created_at=row["created_at"],
    )


@dataclass
class Result:
    """What one attempt did (for logs, metrics and tests)."""

    message_id: Any
    sink: str
    status: str
    code: int | None


class Outbox:
    """Sends what is due, keeping each endpoint's ``min_interval_s`` (Slack: 1 s)."""

    def __init__(
        self,
        config: NotifyConfig,
        transport: Transport,
        policy: RetryPolicy,
        metrics: NotifierMetrics | None = None,
    ) -> None:
        self.config = config
        self.transport = transport
        self.policy = policy
        self.metrics = metrics
        self._next_send: dict[str, float] = {}

    def send_one(self, conn: DictConnection, now: datetime) -> Result | None:
        """Send the oldest due message of a sink that may send now; None if none."""
        clock = time.monotonic()
        ready = [
            s for s in self.config.sinks if self._next_send.get(self._pace_key(s), 0.0) <= clock
        ]
        if not ready:
            return None
        with conn.transaction():
            row = conn.execute(_DUE, {"now": now, "sinks": ready}).fetchone()
            if row is None:
                return None
            return self._attempt(conn, row, now)

    def _pace_key(self, sink_name: str) -> str:
        # By URL: two sinks posting to one Slack webhook share its one message a second.
        return url_fingerprint(self.config.sinks[sink_name])

    def _attempt(self, conn: DictConnection, row: dict[str, Any], now: datetime) -> Result:
        sink_name = row["sink"]
        sink = self.config.sinks[sink_name]
        attempt = int(row["attempts"]) + 1
        digest = digest_of(row)
        code: int | None = None
        try:
            request = render(digest, sink_name, self.config, now)
            self._next_send[self._pace_key(sink_name)] = time.monotonic() + sink.min_interval_s
            response = self.transport.send(request)
            code = response.status
            verdict = judge(sink.type, response.status, response.headers, response.body)
        except Refused as exc:
            verdict = Verdict(Outcome.PERMANENT, None, f"refused by the SSRF guard: {exc}")
        except Unreachable as exc:
            verdict = Verdict(Outcome.RETRY, None, str(exc))
        status = self._record(conn, row, attempt, verdict, code, now)
        log.info(
            "message %s sink=%s rule=%s attempt=%d: %s%s",
            row["id"],
            sink_name,
            row["rule"],
            attempt,
            status,
            f" ({verdict.reason})" if verdict.reason else "",
        )
        return Result(row["id"], sink_name, status, code)

    def _record(
        self,
        conn: DictConnection,
        row: dict[str, Any],
        attempt: int,
        verdict: Verdict,
        code: int | None,
        now: datetime,
    ) -> str:
        sink_name = row["sink"]
        next_at: datetime | None = None
        if verdict.outcome is Outcome.DELIVERED:
            status = "sent"
        elif verdict.outcome is Outcome.RETRY and attempt < self.policy.max_retries + 1:
            status = "retrying"
            seed = row["id"].int >> 66  # a stable per-message seed for the jitter
            delay = planned_delay_s(self.policy, seed, attempt)
            next_at = now + timedelta(seconds=max(delay, verdict.retry_after_s or 0.0))
        elif verdict.outcome is Outcome.DISABLE:
            status = "disabled"
            self._disable(conn, sink_name, verdict.reason, now)
        else:
            status = "failed"
        conn.execute(
            "UPDATE notification_messages SET status = %s, attempts = %s, response_code = %s,"
            " last_error = %s, next_attempt_at = coalesce(%s, next_attempt_at),"
            " sent_at = CASE WHEN %s = 'sent' THEN %s ELSE sent_at END WHERE id = %s",
            (status, attempt, code, verdict.reason or None, next_at, status, now, row["id"]),
        )
        conn.execute(
            "UPDATE notification_deliveries SET status = %s, attempts = %s, response_code = %s,"
            " next_attempt_at = %s, updated_at = now() WHERE message_id = %s",
            (status, attempt, code, next_at, row["id"]),
        )
        if self.metrics is not None:
            if status == "sent":
                self.metrics.sent.labels(sink_name).inc()
            else:
                self.metrics.failed.labels(sink_name).inc()
            if status in ("failed", "disabled"):
                reason = "refused" if "SSRF" in verdict.reason else "gave_up"
                count = len(row["notices"])
                self.metrics.dropped.labels(
                    sink_name, "disabled" if status == "disabled" else reason
                ).inc(count)
        return status

    def _disable(self, conn: DictConnection, sink_name: str, reason: str, now: datetime) -> None:
        sink = self.config.sinks[sink_name]
        conn.execute(
            "INSERT INTO notification_endpoints (sink, url_sha256, disabled_at, reason)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (sink) DO UPDATE SET"
            " url_sha256 = EXCLUDED.url_sha256, disabled_at = EXCLUDED.disabled_at,"
            " reason = EXCLUDED.reason",
            (sink_name, url_fingerprint(sink), now, reason),
        )
        queued = conn.execute(
            "UPDATE notification_messages SET status = 'disabled', last_error = %s"
            " WHERE sink = %s AND status IN ('queued', 'retrying') RETURNING id",
            (reason, sink_name),
        ).fetchall()
        conn.execute(
            "UPDATE notification_deliveries SET status = 'disabled', updated_at = now()"
            " WHERE sink = %s AND (status = 'pending' OR message_id = ANY(%s))",
            (sink_name, [r["id"] for r in queued]),
        )
        log.warning("sink %s disabled: %s", sink_name, reason)
