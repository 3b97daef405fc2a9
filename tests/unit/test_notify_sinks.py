"""What each sink renders keeps to its vendor's limits, whatever the events hold."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from flagsched.notifier.config import EventKind, parse_config
from flagsched.notifier.digest import Digest, trigger_key
from flagsched.notifier.notice import Notice
from flagsched.notifier.sinks import opsgenie, pagerduty, slack, webhook
from flagsched.notifier.sinks.base import Outcome, retry_after_s
from flagsched.schemas.events import Priority

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
CONFIG = parse_config(
    {
        "links": {
            "admin_url": "https://admin.example.com/s/{schedule_id}",
            "trace_url": "https://traces.example.com/{trace_id}",
        },
        "sinks": {
            "s": {"type": "slack", "url": "https://hooks.slack.com/services/T/B/X"},
            "p": {"type": "pagerduty", "routing_key": "k" * 32},
            "o": {"type": "opsgenie", "api_key": "g" * 36},
            "w": {"type": "webhook", "url": "https://h.example.com/", "secrets": [SECRET]},
        },
        "rules": [{"name": "r", "events": ["dead_lettered"], "sinks": ["s", "p", "o", "w"]}],
    }
)


def _sink(name: str) -> Any:
    return CONFIG.sinks[name]


texts = st.text(min_size=0, max_size=5000)


def _notices(n: int, message: str = "boom", flag: str = "promo.banner") -> tuple[Notice, ...]:
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    return tuple(
        Notice(
            key=f"lifecycle:{i}:dead_lettered:4",
            kind=EventKind.DEAD_LETTERED,
            occurred_at=t0 + timedelta(milliseconds=i),
            schedule_id=i,
            flag_key=flag,
            priority=Priority.CRITICAL if i % 7 == 0 else Priority.NORMAL,
            attempt=4,
            reason="exhausted",
            error_class="infrastructure",
            error_message=message,
            trace_id="0af7651916cd43dd8448eb211c80319c",
        )
        for i in range(1, n + 1)
    )


def _digest(notices: tuple[Notice, ...], action: Any = "trigger") -> Digest:
    key = trigger_key("r", EventKind.DEAD_LETTERED, list(notices), None)
    return Digest(
        uuid.uuid4(),
        "r",
        EventKind.DEAD_LETTERED,
        action,
        key,
        notices,
        datetime.now(UTC),
    )


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 1200), message=texts, flag=st.from_regex(r"[a-z.]{1,200}", fullmatch=True))
def test_slack_keeps_to_block_kit_limits(n, message, flag):
    body = json.loads(slack.render(_digest(_notices(n, message, flag)), _sink("s"), CONFIG).body)
    assert body["text"] and len(body["text"]) <= 3000
    blocks = body["blocks"]
    assert 1 <= len(blocks) <= 50
    for block in blocks:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150
        if block["type"] == "section":
            assert len(block.get("text", {}).get("text", "")) <= 3000
            assert len(block.get("fields", [])) <= 10
            assert all(len(f["text"]) <= 2000 for f in block.get("fields", []))
        if block["type"] == "context":
            assert len(block["elements"]) <= 10
        if block["type"] == "actions":
            assert all(
                len(e["text"]["text"]) <= 75 and len(e["url"]) <= 3000 for e in block["elements"]
            )


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 1200), message=texts)
def test_pagerduty_and_opsgenie_keep_to_their_limits(n, message):
    digest = _digest(_notices(n, message))
    event = json.loads(pagerduty.render(digest, _sink("p"), CONFIG).body)
    assert event["routing_key"] == "k" * 32 and event["event_action"] == "trigger"
    assert len(event["dedup_key"]) <= 255
    assert 1 <= len(event["payload"]["summary"]) <= 1024
    assert event["payload"]["severity"] in ("critical", "error", "warning", "info")
    assert event["payload"]["source"]
    alert = json.loads(opsgenie.render(digest, _sink("o"), CONFIG).body)
    assert 1 <= len(alert["message"]) <= 130
    assert len(alert["alias"]) <= 512
    assert alert["priority"] in ("P1", "P2", "P3", "P4", "P5")
    assert all(isinstance(v, str) for v in alert["details"].values())


def test_one_schedule_gets_a_stable_per_schedule_key_and_links():
    digest = _digest(_notices(1))
    assert digest.dedup_key == "flagsched:1"
    event = json.loads(pagerduty.render(digest, _sink("p"), CONFIG).body)
    assert event["payload"]["severity"] == "error"  # a normal schedule; critical pages as critical
    assert {link["href"] for link in event["links"]} == {
        "https://admin.example.com/s/1",
        "https://traces.example.com/0af7651916cd43dd8448eb211c80319c",
    }
    resolve = json.loads(pagerduty.render(_digest(_notices(1), "resolve"), _sink("p"), CONFIG).body)
    assert resolve == {
        "routing_key": "k" * 32,
        "event_action": "resolve",
        "dedup_key": "flagsched:1",
    }
    close = opsgenie.render(_digest(_notices(1), "resolve"), _sink("o"), CONFIG)
    assert (
        close.url == "https://api.opsgenie.com/v2/alerts/flagsched%3A1/close?identifierType=alias"
    )
    assert close.headers["authorization"] == "GenieKey " + "g" * 36
    assert "authorization" in close.secret_headers


def test_the_webhook_signature_is_the_documented_hmac():
    import hashlib
    import hmac

    digest = _digest(_notices(3))
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    req = webhook.render(digest, _sink("w"), CONFIG, now)
    msg_id, ts = req.headers["webhook-id"], req.headers["webhook-timestamp"]
    assert ts == str(int(now.timestamp()))
    expected = hmac.new(b"s" * 32, f"{msg_id}.{ts}.".encode() + req.body, hashlib.sha256).digest()
    assert req.headers["webhook-signature"] == "v1," + base64.b64encode(expected).decode()
    body = json.loads(req.body)
    assert set(body) == {"type", "timestamp", "data"}
    assert body["type"] == "flagsched.dead_lettered"
    assert body["data"]["schedule_ids"] == [1, 2, 3]
    later = webhook.render(digest, _sink("w"), CONFIG, now + timedelta(minutes=5))
    assert later.headers["webhook-id"] == msg_id  # the same across retries
    assert later.body == req.body


def test_verdicts_follow_each_vendor():
    assert pagerduty.judge(202, {}, b"").outcome is Outcome.DELIVERED
    assert pagerduty.judge(400, {}, b"bad").outcome is Outcome.PERMANENT
    assert pagerduty.judge(429, {"retry-after": "7"}, b"").retry_after_s == 7
    assert pagerduty.judge(503, {}, b"").outcome is Outcome.RETRY
    assert webhook.judge(410, {}, b"").outcome is Outcome.DISABLE
    assert webhook.judge(301, {"location": "https://elsewhere/"}, b"").outcome is Outcome.PERMANENT
    assert slack.judge(429, {"retry-after": "2"}, b"").outcome is Outcome.RETRY
    assert opsgenie.judge(422, {}, b"").outcome is Outcome.PERMANENT


@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**9), 10**9))
def test_retry_after_is_never_negative_nor_beyond_the_cap(value):
    got = retry_after_s(str(value))
    assert got is None or 0 <= got <= 3600


def test_retry_after_as_an_http_date():
    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_s("Tue, 01 Dec 2026 12:00:30 GMT", now) == 30
