"""PagerDuty Events API v2 (``POST /v2/enqueue``).

A trigger carries ``routing_key``, ``event_action``, a ``dedup_key`` (at most 255
characters), ``payload.summary`` (at most 1,024), ``payload.source``,
``payload.severity`` (critical, error, warning, info), ``custom_details`` and
``links``; a resolve carries the routing key and the dedup key. PagerDuty answers 202
when it accepted the event, 400 for an invalid one (not retried), 429 and 5xx when it
should be sent again.
"""

from __future__ import annotations

from typing import Any

from flagsched.notifier.config import NotifyConfig, PagerDutySink
from flagsched.notifier.digest import Digest
from flagsched.notifier.sinks.base import Outcome, Request, Verdict, clip, judge_http

SUMMARY_CHARS = 1024
DEDUP_KEY_CHARS = 255
#: Schedules detailed in custom_details; every id is listed in schedule_ids.
DETAILED = 20


def render(digest: Digest, sink: PagerDutySink, config: NotifyConfig) -> Request:
    """The event's JSON body."""
    event: dict[str, Any] = {
        "routing_key": sink.routing_key.get_secret_value(),
        "event_action": digest.action,
        "dedup_key": digest.dedup_key[:DEDUP_KEY_CHARS],
    }
    if digest.action == "trigger":
        event["payload"] = {
            "summary": clip(digest.summary(), SUMMARY_CHARS),
            "source": config.source,
            "severity": digest.severity(),
            "timestamp": min(n.occurred_at for n in digest.notices).isoformat(),
            "component": "flagsched",
            "class": digest.kind.value,
            "custom_details": {
                "rule": digest.rule,
                "count": len(digest.notices),
                "schedule_ids": digest.schedule_ids,
                "events": [
                    n.model_dump(mode="json", exclude_none=True) for n in digest.notices[:DETAILED]
                ],
            },
        }
        event["links"] = [{"href": url, "text": text} for text, url in digest.links(config.links)]
    return Request.post_json(sink.url, event)


def judge(status: int, headers: dict[str, str], body: bytes) -> Verdict:
    """202 accepted; 400 is a bad event (never retried); 429 and 5xx are retried."""
    verdict = judge_http(status, headers, body)
    if status == 400:
        return Verdict(Outcome.PERMANENT, None, verdict.reason)
    return verdict
