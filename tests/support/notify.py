"""Helpers for the notifier's tests: its config pointed at loopback receivers, the
lifecycle events a worker would publish, and the notifier running in a thread."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
from kafka import KafkaProducer

from flagsched.notifier.config import NotifyConfig, parse_config
from flagsched.notifier.service import Notifier
from flagsched.notifier.settings import NotifySettings
from flagsched.runtime.settings import Settings
from flagsched.schemas.events import LifecycleEvent, LifecycleType
from tests.support.pipeline import Running, wait_until
from tests.support.receivers import Receiver

NEW_SECRET = "whsec_" + base64.b64encode(b"new-signing-key-0123456789abcdef").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"old-signing-key-0123456789abcdef").decode()


def sinks_for(recv: dict[str, Receiver]) -> dict[str, Any]:
    """A sink per receiver given (slack, pagerduty, opsgenie, webhook)."""
    url = {name: r.url for name, r in recv.items()}
    url.update(
        {
            name: "http://127.0.0.1:9"
            for name in ("slack", "pagerduty", "opsgenie", "webhook")
            if name not in url
        }
    )
    every = {
        "slack": {
            "type": "slack",
            "url": f"{url['slack']}/services/T0/B0/x",
            "min_interval_s": 1,
        },
        "pagerduty": {
            "type": "pagerduty",
            "routing_key": "R" * 32,
            "url": f"{url['pagerduty']}/v2/enqueue",
        },
        "opsgenie": {
            "type": "opsgenie",
            "api_key": "g" * 36,
            "url": f"{url['opsgenie']}/v2/alerts",
        },
        "webhook": {
            "type": "webhook",
            "url": f"{url['webhook']}/hooks",
            "secrets": [NEW_SECRET, OLD_SECRET],
        },
    }
    return {name: sink for name, sink in every.items() if name in recv}


def config_for(recv: dict[str, Receiver], **rule: Any) -> NotifyConfig:
    """One rule sending dead letters (and breaker changes) to every receiver given."""
    base = {
        "name": "dead-letters",
        "events": ["dead_lettered", "breaker_opened", "breaker_closed"],
        "sinks": sorted(recv),
        "group_wait_s": 0.5,
        "group_interval_s": 3,
        "rate_limit_per_min": 6,
    }
    base.update(rule)
    return parse_config(
        {
            "source": "flagsched-test",
            "links": {"admin_url": "https://admin.example.com/schedules/{schedule_id}"},
            "sinks": sinks_for(recv),
            "rules": [base],
        }
    )


def notify_settings(**overrides: Any) -> NotifySettings:
    """Fast retries for tests; plain http to the loopback receivers."""
    values: dict[str, Any] = {
        "group_id": f"n{uuid.uuid4().hex[:8]}",
        "allow_insecure": True,
        "http_timeout_s": 2.0,
        "retry_base_s": 0.2,
        "retry_cap_s": 1.0,
        "max_attempts": 100,
        "tick_s": 0.05,
    }
    values.update(overrides)
    return NotifySettings(**values)


def add_dead_schedules(
    conn: psycopg.Connection[Any], n: int, *, priority: str = "normal"
) -> list[int]:
    """``n`` schedules of missing flags, dead-lettered as a worker leaves them."""
    rows = conn.execute(
        "INSERT INTO flag_schedules (flag_key, updates, scheduled_at, priority, status)"
        " SELECT 'promo.f' || g, '{\"enabled\": true}', now(), %s, 'dead'"
        " FROM generate_series(1, %s) g RETURNING id",
        (priority, n),
    ).fetchall()
    return [int(r["id"] if isinstance(r, dict) else r[0]) for r in rows]


def lifecycle(
    sid: int, kind: LifecycleType = LifecycleType.DEAD_LETTERED, **kw: Any
) -> LifecycleEvent:
    """The event a worker publishes about schedule ``sid``."""
    values: dict[str, Any] = {
        "type": kind,
        "schedule_id": sid,
        "flag_key": f"promo.f{sid}",
        "attempt": 4,
        "occurred_at": datetime.now(UTC),
    }
    if kind is LifecycleType.DEAD_LETTERED:
        values.update(reason="exhausted", error_class="infrastructure", error_message="db down")
    values.update(kw)
    return LifecycleEvent(**values)


def publish(settings: Settings, topic: str, values: list[bytes], key: bytes = b"k") -> None:
    """Send records the way the workers do (acks=all), and wait for them."""
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=5
    )
    try:
        for value in values:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=30)
    finally:
        producer.close()


def publish_lifecycle(settings: Settings, events: list[LifecycleEvent]) -> None:
    """Publish lifecycle events, keyed by flag as the workers key them."""
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=5
    )
    try:
        for e in events:
            producer.send(
                settings.topic_layout().lifecycle,
                key=e.flag_key.encode(),
                value=e.model_dump_json().encode(),
            )
        producer.flush(timeout=30)
    finally:
        producer.close()


@contextlib.contextmanager
def running_notifier(
    settings: Settings, notify: NotifySettings, config: NotifyConfig, **kw: Any
) -> Iterator[Notifier]:
    """The notifier in a thread, joined to its group when the block starts."""
    notifier = Notifier(settings, notify, config, **kw)
    with Running(notifier.run, "notifier"):
        wait_until(notifier.ready.is_set, timeout_s=90, what="the notifier's assignment")
        yield notifier


def statuses(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Deliveries by status."""
    rows = conn.execute(
        "SELECT status, count(*) AS n FROM notification_deliveries GROUP BY status"
    ).fetchall()
    return {r["status"]: int(r["n"]) for r in rows}


def config_file(tmp: Any, config: dict[str, Any]) -> str:
    """Write a rules file (YAML is a superset of JSON) and return its path."""
    path = os.path.join(str(tmp), "notify.yaml")
    with open(path, "w") as f:
        json.dump(config, f)
    return path
