"""Opsgenie Alert API: create (``POST /v2/alerts``) and close by alias
(``POST /v2/alerts/<alias>/close?identifierType=alias``), with
``Authorization: GenieKey <key>``. ``message`` at most 130 characters, ``alias`` (the
dedup key) at most 512, ``priority`` P1-P5, ``details`` a string map. Opsgenie answers
202 and processes the request asynchronously.

Atlassian ends Opsgenie support in April 2027; this sink is kept small on purpose.
"""

from __future__ import annotations

from urllib.parse import quote

from flagsched.notifier.config import NotifyConfig, OpsgenieSink
from flagsched.notifier.digest import Digest
from flagsched.notifier.sinks.base import Request, Verdict, clip, judge_http

MESSAGE_CHARS = 130
ALIAS_CHARS = 512
DESCRIPTION_CHARS = 15000
_PRIORITY = {"critical": "P1", "error": "P2", "warning": "P3", "info": "P5"}


def render(digest: Digest, sink: OpsgenieSink, config: NotifyConfig) -> Request:
    """Create the alert, or close it by alias."""
    auth = {"authorization": f"GenieKey {sink.api_key.get_secret_value()}"}
    alias = digest.dedup_key[:ALIAS_CHARS]
    base = sink.url.rstrip("/")
    if digest.action == "resolve":
        url = f"{base}/{quote(alias, safe='')}/close?identifierType=alias"
        req = Request.post_json(url, {"source": config.source, "note": "applied"}, **auth)
    else:
        lines = [n.headline for n in digest.notices[:50]]
        details = {
            "rule": digest.rule,
            "count": str(len(digest.notices)),
            "schedule_ids": ",".join(map(str, digest.schedule_ids))[:8000],
        }
        req = Request.post_json(
            base,
            {
                "message": clip(digest.summary(), MESSAGE_CHARS),
                "alias": alias,
                "description": clip("\n".join(lines), DESCRIPTION_CHARS),
                "priority": _PRIORITY[digest.severity()],
                "source": config.source,
                "tags": ["flagsched", digest.kind.value],
                "details": details,
            },
            **auth,
        )
    return Request(req.method, req.url, req.body, req.headers, frozenset({"authorization"}))


def judge(status: int, headers: dict[str, str], body: bytes) -> Verdict:
    """202 accepted; 429 and 5xx retried; other 4xx are not."""
    return judge_http(status, headers, body)
