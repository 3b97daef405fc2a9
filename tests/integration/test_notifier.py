"""The notifier against real Kafka, real PostgreSQL and real HTTP receivers on loopback
that check each vendor's contract (tests/support/receivers.py)."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from flagsched.notifier.errors import Refused
from flagsched.schemas.events import BreakerState, ControlEvent, LifecycleType
from tests.support.notify import (
    NEW_SECRET,
    add_dead_schedules,
    config_for,
    lifecycle,
    notify_settings,
    publish,
    publish_lifecycle,
    running_notifier,
    statuses,
)
from tests.support.pipeline import wait_until
from tests.support.receivers import Receiver, receivers, webhook_contract

pytestmark = pytest.mark.integration


@pytest.fixture
def recv():
    made = receivers((NEW_SECRET,))
    yield made
    for r in made.values():
        r.down()


def test_each_sink_gets_its_vendors_format_and_incidents_resolve_when_applied(settings, db, recv):
    (sid,) = add_dead_schedules(db, 1, priority="critical")
    config = config_for(recv)
    with running_notifier(settings, notify_settings(), config):
        publish_lifecycle(settings, [lifecycle(sid)])
        wait_until(lambda: all(r.accepted() for r in recv.values()), what="every sink's message")
        for r in recv.values():
            assert r.problems == [], r.vendor
        trigger = recv["pagerduty"].accepted()[0].json
        assert trigger["event_action"] == "trigger"
        assert trigger["dedup_key"] == f"flagsched:{sid}"
        assert trigger["payload"]["severity"] == "critical"  # a critical schedule pages as critical
        assert trigger["payload"]["custom_details"]["schedule_ids"] == [sid]
        assert {
            "href": f"https://admin.example.com/schedules/{sid}",
            "text": "Schedule in flagsched admin",
        } in trigger["links"]
        alert = recv["opsgenie"].accepted()[0].json
        assert alert["alias"] == f"flagsched:{sid}" and alert["priority"] == "P1"
        slack = recv["slack"].accepted()[0].json
        assert f"schedule {sid}" in slack["text"] and slack["blocks"][0]["type"] == "header"
        hook = recv["webhook"].accepted()[0].json
        assert hook["type"] == "flagsched.dead_lettered" and hook["data"]["schedule_ids"] == [sid]

        # A redrive applies it: the incident resolves, by the same keys.
        db.execute("UPDATE flag_schedules SET status = 'applied' WHERE id = %s", (sid,))
        publish_lifecycle(
            settings, [lifecycle(sid, LifecycleType.APPLIED, attempt=5, flag_version=2)]
        )
        wait_until(lambda: len(recv["pagerduty"].accepted()) == 2, what="the resolve")
        wait_until(lambda: len(recv["opsgenie"].accepted()) == 2, what="the close")
    resolve = recv["pagerduty"].accepted()[1].json
    assert resolve == {
        "routing_key": "R" * 32,
        "event_action": "resolve",
        "dedup_key": f"flagsched:{sid}",
    }
    close = recv["opsgenie"].accepted()[1]
    assert close.path == f"/v2/alerts/flagsched%3A{sid}/close?identifierType=alias"
    assert len(recv["slack"].accepted()) == 1  # the rule does not ask for applied events
    rows = db.execute(
        "SELECT sink, status, attempts, response_code FROM notification_deliveries"
    ).fetchall()
    assert {(r["sink"], r["status"], r["response_code"]) for r in rows} == {
        ("slack", "sent", 200),
        ("pagerduty", "sent", 202),
        ("opsgenie", "sent", 202),
        ("webhook", "sent", 204),
    }
    assert len(rows) == 6  # 4 triggers + 2 resolves: one row per (event, sink)


def test_the_breaker_opening_pages_once_and_its_closing_resolves(settings, db, recv):
    config = config_for({k: recv[k] for k in ("pagerduty", "slack")})
    now = time.time()
    from datetime import UTC, datetime

    def control(state: BreakerState) -> bytes:
        return (
            ControlEvent(
                state=state, worker_id="w1", reason="db down", at=datetime.fromtimestamp(now, UTC)
            )
            .model_dump_json()
            .encode()
        )

    with running_notifier(settings, notify_settings(), config):
        publish(
            settings,
            settings.topic_layout().control,
            [control(BreakerState.OPEN), control(BreakerState.OPEN)],
            key=b"breaker",
        )
        wait_until(lambda: recv["pagerduty"].accepted(), what="the page")
        publish(
            settings,
            settings.topic_layout().control,
            [control(BreakerState.CLOSED)],
            key=b"breaker",
        )
        wait_until(lambda: len(recv["pagerduty"].accepted()) == 2, what="the resolve")
        wait_until(lambda: len(recv["slack"].accepted()) == 2, what="both Slack posts")
    events = [r.json for r in recv["pagerduty"].accepted()]
    assert [(e["event_action"], e["dedup_key"]) for e in events] == [
        ("trigger", "flagsched:breaker"),
        ("resolve", "flagsched:breaker"),
    ]
    assert statuses(db).get("suppressed") == 2  # the second OPEN, for both sinks: deduplicated


def test_429_500_and_a_receiver_down_for_a_while_still_deliver_everything(settings, db, recv):
    """Duplicates may only repeat a webhook-id or a dedup_key. The issue's 60 s outage
    is 6 s here (retry_cap_s=1 keeps the retries coming)."""
    sids = add_dead_schedules(db, 3)
    hook, pd, slack = recv["webhook"], recv["pagerduty"], recv["slack"]
    hook.respond((429, {"Retry-After": "2"}), (500, {}))
    slack.respond((429, {"Retry-After": "1"}))
    pd.down()
    config = config_for({k: recv[k] for k in ("webhook", "pagerduty", "slack")}, group_wait_s=0)
    with running_notifier(settings, notify_settings(), config):
        publish_lifecycle(settings, [lifecycle(sids[0])])
        wait_until(lambda: hook.accepted(), what="the webhook after 429 and 500", timeout_s=30)
        down_since = time.monotonic()
        wait_until(
            lambda: (
                db.execute(
                    "SELECT max(attempts) AS a FROM notification_messages WHERE sink = 'pagerduty'"
                ).fetchone()["a"]
                >= 3
            ),
            what="retries against the stopped receiver",
        )
        wait_until(
            lambda: time.monotonic() - down_since > 6, what="six seconds of outage", timeout_s=10
        )
        publish_lifecycle(settings, [lifecycle(sid) for sid in sids[1:]])
        pd.up()
        wait_until(
            lambda: (
                {
                    s
                    for r in pd.accepted()
                    for s in r.json["payload"]["custom_details"]["schedule_ids"]
                }
                == set(sids)
            ),
            what="every schedule at PagerDuty",
            timeout_s=30,
        )
        wait_until(
            lambda: (
                {s for r in hook.accepted() for s in r.json["data"]["schedule_ids"]} == set(sids)
            ),
            what="every schedule at the webhook",
            timeout_s=30,
        )
        wait_until(
            lambda: (
                {
                    s
                    for r in slack.accepted()
                    for s in json.loads(r.body)["text"].split()
                    if s.isdigit()
                }
                >= {str(sids[0])}
            ),
            what="Slack after its 429",
            timeout_s=30,
        )
    attempts = hook.received
    assert [a.answered for a in attempts[:3]] == [429, 500, 204]
    assert attempts[1].at - attempts[0].at >= 2.0  # Retry-After honoured
    first_id = attempts[0].headers["webhook-id"]
    assert [a.headers["webhook-id"] for a in attempts[:3]] == [
        first_id
    ] * 3  # stable across retries
    assert len({a.body for a in attempts[:3]}) == 1
    assert slack.received[1].at - slack.received[0].at >= 1.0
    # duplicates only under the same id or key
    by_id = Counter(r.headers["webhook-id"] for r in hook.accepted())
    assert all(n == 1 for n in by_id.values())
    assert hook.problems == [] and pd.problems == [] and slack.problems == []
    row = db.execute(
        "SELECT attempts, status FROM notification_messages WHERE sink = 'pagerduty'"
        " ORDER BY created_at LIMIT 1"
    ).fetchone()
    assert row["status"] == "sent" and row["attempts"] >= 3


def test_a_410_disables_the_endpoint(settings, db, recv, monkeypatch, capsys):
    sids = add_dead_schedules(db, 2)
    hook = recv["webhook"]
    hook.respond((410, {}))
    config = config_for({"webhook": hook}, group_wait_s=0, group_interval_s=0)
    with running_notifier(settings, notify_settings(), config) as notifier:
        publish_lifecycle(settings, [lifecycle(sids[0])])
        wait_until(
            lambda: db.execute(
                "SELECT 1 FROM notification_endpoints WHERE sink = 'webhook'"
            ).fetchone(),
            what="the endpoint disabled",
        )
        publish_lifecycle(settings, [lifecycle(sids[1])])
        wait_until(lambda: statuses(db).get("disabled") == 2, what="both deliveries disabled")
    assert [r.answered for r in hook.received] == [410]  # nothing more was sent to it
    from flagsched.admin.notifications import recent_deliveries, render_deliveries

    shown = recent_deliveries(db, status="disabled", sink="webhook")
    assert sorted(r.schedule_id or 0 for r in shown) == sorted(sids)
    assert any(r.response_code == 410 and "410" in (r.last_error or "") for r in shown)
    assert "disabled" in render_deliveries(shown)
    from flagsched.cli.app import main

    monkeypatch.setenv("FLAGSCHED_DATABASE_URL", settings.require_database_url())
    monkeypatch.setenv("FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers)
    assert main(["notify", "deliveries", "--status", "disabled", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    sample = notifier.metrics.registry.get_sample_value
    dropped = {"sink": "webhook", "reason": "disabled"}
    assert sample("flagsched_notifications_dropped_total", dropped) == 2
    assert sample("flagsched_notifications_failed_total", {"sink": "webhook"}) == 1
    assert sample("flagsched_notifications_sent_total", {"sink": "webhook"}) == 0


def test_a_burst_of_1000_dead_letters_makes_at_most_3_slack_messages_and_one_incident(
    settings, db, recv
):
    sids = add_dead_schedules(db, 1000)
    config = config_for(recv, group_wait_s=2, group_interval_s=5)
    with running_notifier(settings, notify_settings(), config) as notifier:
        started = time.monotonic()
        publish_lifecycle(settings, [lifecycle(sid) for sid in sids])
        published = time.monotonic() - started
        wait_until(
            lambda: (
                {s for r in recv["webhook"].accepted() for s in r.json["data"]["schedule_ids"]}
                == set(sids)
            ),
            what="all 1,000 at the webhook",
            timeout_s=60,
        )
        wait_until(lambda: statuses(db) == {"sent": 4000}, what="every delivery sent", timeout_s=60)
        took = time.monotonic() - started
    slack = recv["slack"].accepted()
    pd_keys = {r.json["dedup_key"] for r in recv["pagerduty"].accepted()}
    og_aliases = {r.json["alias"] for r in recv["opsgenie"].accepted()}
    print(
        f"\nburst: 1000 dead letters published in {published:.2f}s, all delivered in {took:.2f}s;"
        f" slack {len(slack)} message(s), pagerduty {len(recv['pagerduty'].accepted())} event(s)"
        f" / {len(pd_keys)} dedup key(s), opsgenie {len(og_aliases)} alias(es),"
        f" webhook {len(recv['webhook'].accepted())} request(s)"
    )
    assert 1 <= len(slack) <= 3
    sample = notifier.metrics.registry.get_sample_value
    assert sample("flagsched_notifications_sent_total", {"sink": "slack"}) == len(slack)
    assert sample("flagsched_notifications_recorded_total", {"sink": "webhook"}) == 1000
    assert len(pd_keys) == 1 and len(og_aliases) == 1  # one incident
    assert all(r.problems == [] for r in recv.values())
    assert statuses(db) == {"sent": 4000}


def test_urls_resolving_to_loopback_metadata_or_private_addresses_are_refused_unsent(settings, db):
    """A live receiver on 127.0.0.1 gets nothing without FLAGSCHED_NOTIFY_ALLOW_INSECURE;
    names resolving to 169.254.169.254 and 10.0.0.1 (through the guard's resolver: no
    traffic ever goes to a non-loopback address) are refused before connecting."""
    live = Receiver("webhook", webhook_contract(NEW_SECRET))
    addresses = {
        "meta.example": "169.254.169.254",
        "private.example": "10.0.0.1",
        "loop.example": "127.0.0.1",
    }
    from flagsched.notifier.config import parse_config

    sinks = {
        "direct": {
            "type": "webhook",
            "url": f"https://127.0.0.1:{live.port}/",
            "secrets": [NEW_SECRET],
        },
        **{
            h.split(".")[0]: {
                "type": "webhook",
                "url": f"https://{h}:{live.port}/",
                "secrets": [NEW_SECRET],
            }
            for h in addresses
        },
    }
    config = parse_config(
        {
            "sinks": sinks,
            "rules": [
                {
                    "name": "r",
                    "events": ["dead_lettered"],
                    "sinks": sorted(sinks),
                    "group_wait_s": 0,
                }
            ],
        }
    )
    asked = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return [addresses[host]]

    (sid,) = add_dead_schedules(db, 1)
    try:
        with running_notifier(
            settings, notify_settings(allow_insecure=False), config, resolver=resolver
        ) as notifier:
            publish_lifecycle(settings, [lifecycle(sid)])
            wait_until(lambda: statuses(db).get("failed") == 4, what="four refusals")
            with pytest.raises(Refused):
                notifier.transport.guard.check(f"https://127.0.0.1:{live.port}/")
    finally:
        live.down()
    assert live.received == []
    assert sorted(asked) == ["loop.example", "meta.example", "private.example"]
    errors = [r["last_error"] for r in db.execute("SELECT last_error FROM notification_messages")]
    assert all("SSRF" in e for e in errors) and any("metadata" in e for e in errors)


def _notifier_process(settings, notify, config_path: str, **env: str):
    import subprocess
    import sys

    from tests.support.pipeline import settings_env

    environ = settings_env(settings)
    environ.update(
        {
            "FLAGSCHED_NOTIFY_CONFIG": config_path,
            "FLAGSCHED_NOTIFY_GROUP_ID": notify.group_id,
            "FLAGSCHED_NOTIFY_ALLOW_INSECURE": "true",
            "FLAGSCHED_NOTIFY_RETRY_BASE_S": "0.2",
            "FLAGSCHED_NOTIFY_RETRY_CAP_S": "1",
            "FLAGSCHED_NOTIFY_TICK_S": "0.05",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
    )
    return subprocess.Popen(
        [sys.executable, "-m", "flagsched.cli", "notifier"],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_kill_9_of_the_notifier_mid_burst_loses_nothing(settings, db, recv, tmp_path):
    import os
    import signal

    from tests.support.notify import config_file, sinks_for

    sids = add_dead_schedules(db, 1000)
    hook, slack = recv["webhook"], recv["slack"]
    used = {"webhook": hook, "slack": slack}
    path = config_file(
        tmp_path,
        {
            "sinks": sinks_for(used),
            "rules": [
                {
                    "name": "dead",
                    "events": ["dead_lettered"],
                    "sinks": sorted(used),
                    "group_wait_s": 0.5,
                    "group_interval_s": 1,
                    "rate_limit_per_min": 60,
                }
            ],
        },
    )
    notify = notify_settings()
    first = _notifier_process(settings, notify, path, FLAGSCHED_MAX_POLL_RECORDS="20")
    try:
        publish_lifecycle(settings, [lifecycle(sid) for sid in sids])

        def count() -> int:
            return int(
                db.execute("SELECT count(*) AS n FROM notification_deliveries").fetchone()["n"]
            )

        wait_until(lambda: count() >= 300, what="the first deliveries recorded", timeout_s=90)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        at_kill = count()
        sent_at_kill = len(hook.accepted())
    finally:
        if first.poll() is None:
            first.kill()
    assert at_kill < 2000, "the kill came after the burst: lower the poll size"
    second = _notifier_process(settings, notify, path)
    try:
        wait_until(lambda: count() == 2000, what="every (event, sink) recorded", timeout_s=90)
        wait_until(
            lambda: (
                {s for r in hook.accepted() for s in r.json["data"]["schedule_ids"]} == set(sids)
            ),
            what="all 1,000 at the webhook",
            timeout_s=90,
        )
        # Every delivery, not only every message made so far: a delivery still waiting
        # for its group (Slack's digest) has no message yet.
        wait_until(lambda: statuses(db) == {"sent": 2000}, what="every delivery sent", timeout_s=90)
        assert (
            db.execute(
                "SELECT count(*) AS n FROM notification_messages WHERE status <> 'sent'"
            ).fetchone()["n"]
            == 0
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    # A message may be sent again after a kill, but only under its own webhook-id.
    by_id: dict[str, set[bytes]] = {}
    for r in hook.accepted():
        by_id.setdefault(r.headers["webhook-id"], set()).add(r.body)
    assert all(len(bodies) == 1 for bodies in by_id.values())
    seen = Counter(
        s
        for bodies in by_id.values()
        for body in bodies
        for s in json.loads(body)["data"]["schedule_ids"]
    )
    assert set(seen) == set(sids) and max(seen.values()) == 1  # no schedule under two ids
    assert statuses(db) == {"sent": 2000}
    assert hook.problems == [] and slack.problems == []
    print(
        f"\nkill -9 after {at_kill} of 2000 deliveries recorded and {sent_at_kill} webhook"
        f" message(s) sent; after the restart: {len(by_id)} webhook message(s),"
        f" {len(slack.accepted())} Slack message(s), nothing lost"
    )


def test_a_real_worker_dead_letter_reaches_the_webhook(settings, db, recv):
    """The whole way: dispatcher, worker (a missing flag is a permanent failure), the
    lifecycle topic, the notifier, the signed webhook."""
    from tests.support.pipeline import add_schedule, running_dispatcher, running_worker

    hook = recv["webhook"]
    config = config_for({"webhook": hook}, group_wait_s=0)
    with (
        running_notifier(settings, notify_settings(), config),
        running_worker(settings),
        running_dispatcher(settings),
    ):
        sid = add_schedule(db, "missing.flag", {"enabled": True}, priority="critical")
        wait_until(hook.accepted, what="the webhook", timeout_s=60)
    event = hook.accepted()[0].json["data"]["events"][0]
    assert event["schedule_id"] == sid and event["flag_key"] == "missing.flag"
    assert event["reason"] == "permanent" and event["error_class"] == "flag_not_found"
    assert event["priority"] == "critical"  # read from the schedule's row
    assert hook.problems == []


def test_poison_records_are_announced_and_other_dead_letters_only_once(settings, db, recv):
    """A poison record has no lifecycle event, so the dead-letter topic announces it; an
    exhausted record is announced by its lifecycle event only. Malformed records on the
    notifier's topics are skipped, and their offsets still move on."""
    from flagsched.schemas.headers import DeadLetterReason, RecordHeaders

    hook = recv["webhook"]
    config = config_for({"webhook": hook}, group_wait_s=0, group_interval_s=0)
    layout = settings.topic_layout()
    poison = RecordHeaders(
        attempt=1, due_ms=0, dlt_reason=DeadLetterReason.POISON, error_message="not JSON"
    )
    exhausted = RecordHeaders(attempt=4, due_ms=0, dlt_reason=DeadLetterReason.EXHAUSTED)
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    producer.send(layout.dead_letter, value=b"\xff not json", headers=poison.encode())
    producer.send(layout.dead_letter, value=b"{}", headers=exhausted.encode())
    producer.send(layout.lifecycle, value=b"{ broken")
    producer.flush()
    producer.close()
    notify = notify_settings()
    with running_notifier(settings, notify, config) as notifier:
        wait_until(hook.accepted, what="the poison notice")
        wait_until(
            lambda: (
                notifier.metrics.registry.get_sample_value(
                    "flagsched_notifications_sent_total", {"sink": "webhook"}
                )
                == 1
            ),
            what="the metric",
        )
    rows = db.execute("SELECT event_key, status FROM notification_deliveries").fetchall()
    assert [r["event_key"].split(":")[0] for r in rows] == ["dead-letter"]
    (event,) = hook.accepted()[0].json["data"]["events"]
    assert event["reason"] == "poison" and event["error_message"] == "not JSON"
    from kafka import KafkaConsumer, TopicPartition

    reader = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=notify.group_id,
        enable_auto_commit=False,
    )
    by_topic: Counter[str] = Counter()
    try:
        for topic in (layout.lifecycle, layout.dead_letter):
            for partition in reader.partitions_for_topic(topic) or ():
                by_topic[topic] += reader.committed(TopicPartition(topic, partition)) or 0
    finally:
        reader.close()
    assert by_topic[layout.lifecycle] == 1 and by_topic[layout.dead_letter] == 2


def test_a_retry_backlog_over_the_threshold_pages_and_resolves_when_it_drains(settings, db, recv):
    pd, slack = recv["pagerduty"], recv["slack"]
    config = config_for(
        {"pagerduty": pd, "slack": slack},
        events=["backlog"],
        backlog_over=3,
        group_wait_s=0,
        dedup_window_s=600,
    )
    sids = add_dead_schedules(db, 5)
    db.execute("UPDATE flag_schedules SET status = 'retrying' WHERE id = ANY(%s)", (sids[:3],))
    with running_notifier(settings, notify_settings(backlog_check_s=0.2), config) as notifier:
        wait_until(lambda: notifier.last_backlog == 3, what="a check counting 3 retrying")
        assert statuses(db) == {}  # not over the threshold of 3
        db.execute("UPDATE flag_schedules SET status = 'retrying' WHERE id = ANY(%s)", (sids,))
        wait_until(lambda: pd.accepted() and slack.accepted(), what="the backlog page")
        db.execute("UPDATE flag_schedules SET status = 'applied' WHERE id = ANY(%s)", (sids,))
        wait_until(lambda: len(pd.accepted()) == 2, what="the resolve")
    trigger, resolve = (r.json for r in pd.accepted())
    assert trigger["dedup_key"] == resolve["dedup_key"] == "flagsched:backlog:dead-letters"
    assert "5 schedules waiting for a retry (threshold 3)" in trigger["payload"]["summary"]
    assert resolve["event_action"] == "resolve"
    assert len(slack.accepted()) == 1  # later checks in the dedup window add nothing
    assert pd.problems == [] and slack.problems == []
