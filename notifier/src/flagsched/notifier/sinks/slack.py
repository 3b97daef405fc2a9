"""Slack incoming webhook: a ``text`` fallback plus Block Kit ``blocks``.

Block Kit limits kept here: at most 50 blocks; a header's plain text at most 150
characters; a section's text at most 3,000 and at most 10 fields of 2,000 each; a
context at most 10 elements; a button's text at most 75 characters and its URL at
most 3,000. Slack answers 200 ``ok``, 429 with ``Retry-After`` when a webhook sends
more than about one message a second, and 4xx for a bad payload or a removed hook.
"""

from __future__ import annotations

from typing import Any

from flagsched.notifier.config import NotifyConfig, SlackSink
from flagsched.notifier.digest import Digest
from flagsched.notifier.notice import Notice
from flagsched.notifier.sinks.base import Request, Verdict, clip, judge_http

MAX_BLOCKS = 50
HEADER_CHARS = 150
SECTION_CHARS = 3000
FIELD_CHARS = 2000
MAX_FIELDS = 10
BUTTON_CHARS = 75
URL_CHARS = 3000
#: Schedules listed by name in a digest; the rest are counted.
LISTED = 10


def _md(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def _fields(n: Notice) -> list[dict[str, Any]]:
    pairs = [
        ("Schedule", str(n.schedule_id) if n.schedule_id else None),
        ("Flag", f"`{n.flag_key}`" if n.flag_key else None),
        ("Priority", n.priority.value if n.priority else None),
        ("Attempts", str(n.attempt) if n.attempt else None),
        ("Reason", n.reason),
        ("Error class", n.error_class),
        ("Detail", n.detail),
    ]
    return [_md(clip(f"*{k}*\n{v}", FIELD_CHARS)) for k, v in pairs if v is not None][:MAX_FIELDS]


def render(digest: Digest, sink: SlackSink, config: NotifyConfig) -> Request:
    """The webhook's JSON body."""
    summary = digest.summary()
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": clip(summary, HEADER_CHARS)}}
    ]
    if (one := digest.single) is not None:
        blocks.append({"type": "section", "fields": _fields(one)})
        if one.error_message:
            blocks.append(
                {"type": "section", "text": _md(clip(f"```{one.error_message}```", SECTION_CHARS))}
            )
    else:
        lines = [f"\u2022 {clip(n.headline, 200)}" for n in digest.notices[:LISTED]]
        if len(digest.notices) > LISTED:
            lines.append(f"\u2026 and {len(digest.notices) - LISTED} more")
        blocks.append({"type": "section", "text": _md(clip("\n".join(lines), SECTION_CHARS))})
    buttons = [
        {
            "type": "button",
            "text": {"type": "plain_text", "text": clip(text, BUTTON_CHARS)},
            "url": url[:URL_CHARS],
        }
        for text, url in digest.links(config.links)
    ]
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    blocks.append(
        {
            "type": "context",
            "elements": [_md(clip(f"flagsched rule `{digest.rule}` \u00b7 {config.source}", 300))],
        }
    )
    payload = {"text": clip(summary, SECTION_CHARS), "blocks": blocks[:MAX_BLOCKS]}
    return Request.post_json(sink.url.get_secret_value(), payload)


def judge(status: int, headers: dict[str, str], body: bytes) -> Verdict:
    """200 ok; 429 honours Retry-After; 5xx retried; other 4xx are not."""
    return judge_http(status, headers, body)
