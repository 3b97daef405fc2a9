"""Outcome -> action: one table, every branch."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

from flagsched.consumer.decode import Coordinates
from flagsched.consumer.outcome import Source, decide
from flagsched.consumer.results import (
    Applied,
    Cancelled,
    DeadLettered,
    Deferred,
    Dropped,
    Held,
    Hopped,
    Paused,
    Poison,
    RetryScheduled,
    Superseded,
)
from flagsched.schemas import headers as hdr
from flagsched.schemas.events import Priority
from flagsched.schemas.headers import DeadLetterReason, RecordHeaders
from flagsched.schemas.topics import TopicLayout

LAYOUT = TopicLayout(prefix="fs", tiers_s=(1.0, 5.0, 30.0))
SRC = Source(Coordinates("fs.retry.5s", 1, 99, 0), b"promo", b"{}", "workers")
NOW = 1_800_000_000.0


AT = datetime.fromtimestamp(NOW, UTC)
#: What every recorded outcome of attempt 2 of schedule 7 says.
COMMON: dict[str, Any] = {
    "attempt": 2,
    "schedule_id": 7,
    "flag_key": "promo",
    "scheduled_at": AT,
    "priority": Priority.CRITICAL,
}


def retry(next_attempt_at: datetime, **kw: Any) -> RetryScheduled:
    fields: dict[str, Any] = {
        "error_class": "deadlock",
        "error_message": "boom",
        "first_failure_at": None,
    } | kw
    return RetryScheduled(**COMMON, next_attempt_at=next_attempt_at, **fields)


def test_retry_goes_to_the_largest_fitting_tier_with_fresh_headers():
    nxt = datetime.fromtimestamp(NOW + 12, UTC)
    action = decide(
        retry(nxt, first_failure_at=nxt),
        SRC,
        LAYOUT,
        infra_pause_s=1,
        clock=lambda: NOW,
    )
    tier, life = action.publish
    assert tier.topic == "fs.retry.5s" and tier.key == b"promo" and tier.value == b"{}"
    h = RecordHeaders.decode(tier.headers)
    assert (h.attempt, h.due_ms, h.origin_offset, h.error_class) == (
        3,
        int((NOW + 12) * 1000),
        99,
        "deadlock",
    )
    assert len(tier.headers) == len({k for k, _ in tier.headers})  # replaced, not appended
    assert life.topic == LAYOUT.lifecycle
    event = json.loads(life.value or b"")
    assert (event["type"], event["priority"]) == ("retry_scheduled", "critical")
    assert action.commit


def test_retry_sooner_than_the_smallest_tier_uses_the_smallest_tier():
    nxt = datetime.fromtimestamp(NOW + 0.2, UTC)
    action = decide(retry(nxt), SRC, LAYOUT, infra_pause_s=1, clock=lambda: NOW)
    assert action.publish[0].topic == "fs.retry.1s"


def test_dead_goes_to_the_dead_letter_topic_with_reason_and_lifecycle():
    action = decide(
        DeadLettered(
            **COMMON,
            error_class="deadlock",
            error_message="boom",
            reason=DeadLetterReason.EXHAUSTED,
            first_failure_at=AT,
            due_ms=5,
        ),
        SRC,
        LAYOUT,
        infra_pause_s=1,
    )
    dlt, life = action.publish
    assert dlt.topic == LAYOUT.dead_letter
    assert dict(dlt.headers)[hdr.DLT_REASON] == b"exhausted"
    assert dict(dlt.headers)[hdr.ORIGIN_TOPIC] == b"fs.retry.5s"
    assert RecordHeaders.decode(dlt.headers).due_ms == 5
    event = json.loads(life.value or b"")
    assert (event["type"], event["reason"], event["error_class"]) == (
        "dead_lettered",
        "exhausted",
        "deadlock",
    )


def test_poison_has_no_lifecycle_event():
    action = decide(
        Poison(
            attempt=1,
            error_class="poison",
            error_message="bad",
            reason=DeadLetterReason.POISON,
            due_ms=None,
        ),
        SRC,
        LAYOUT,
        infra_pause_s=1,
    )
    [dlt] = action.publish
    assert dict(dlt.headers)[hdr.DLT_REASON] == b"poison"


def test_hold_pause_drop_and_hop():
    carried = RecordHeaders(attempt=2, due_ms=9, error_class="deadlock")
    hold = decide(Held(attempt=1, until_ms=5, carried=carried), SRC, LAYOUT, infra_pause_s=1)
    assert (hold.commit, hold.hold_until_ms, hold.publish) == (False, 5, ())
    paused = Paused(attempt=1, schedule_id=7, flag_key="promo", error_class="infrastructure")
    pause = decide(paused, SRC, LAYOUT, infra_pause_s=2.5)
    assert (pause.commit, pause.pause_partitions_s) == (False, 2.5)
    dropped = Dropped(attempt=1, schedule_id=7, flag_key="promo", why="stale")
    drop = decide(dropped, SRC, LAYOUT, infra_pause_s=1)
    assert (drop.commit, drop.publish) == (True, ())
    hopped = Hopped(
        attempt=2, schedule_id=7, flag_key="promo", topic="fs.retry.1s", carried=carried
    )
    hop = decide(hopped, SRC, LAYOUT, infra_pause_s=1)
    assert hop.publish[0].topic == "fs.retry.1s"
    assert RecordHeaders.decode(hop.publish[0].headers) == carried


def test_a_deferral_goes_round_the_smallest_tier_with_its_wait_counted():
    carried = RecordHeaders(attempt=1, due_ms=9, order_waits=2)
    deferred = Deferred(attempt=1, schedule_id=7, flag_key="promo", carried=carried)
    action = decide(deferred, SRC, LAYOUT, infra_pause_s=1, clock=lambda: NOW)
    assert action.commit
    assert [r.topic for r in action.publish] == ["fs.retry.1s"]  # no lifecycle event
    assert (action.publish[0].key, action.publish[0].value) == (SRC.key, SRC.value)
    sent = RecordHeaders.decode(action.publish[0].headers)
    # The same attempt and due time, tried again one smallest tier from now.
    assert sent == carried.model_copy(update={"not_before_ms": int(NOW * 1000) + 1000})


def test_applied_superseded_cancelled_tell_subscribers():
    cases: list[tuple[Applied | Superseded | Cancelled, str]] = [
        (Applied(**COMMON, flag_version=9), "applied"),
        (Superseded(**COMMON, superseded_by=8), "superseded"),
        (Cancelled(**COMMON), "cancelled"),
    ]
    for result, kind in cases:
        [life] = decide(result, SRC, LAYOUT, infra_pause_s=1).publish
        event = json.loads(life.value or b"")
        assert event["type"] == kind and life.key == b"promo"
        assert (event["flag_version"], event["superseded_by"]) == {
            "applied": (9, None),
            "superseded": (None, 8),
            "cancelled": (None, None),
        }[kind]


def test_schedules_an_attempt_brought_are_announced_first_in_due_order():
    brought = tuple(
        Applied(
            attempt=1,
            schedule_id=sid,
            flag_key="promo",
            scheduled_at=AT,
            priority=Priority.NORMAL,
            flag_version=sid,
        )
        for sid in (3, 5)
    )
    dropped = Dropped(attempt=2, schedule_id=7, flag_key="promo", why="duplicate")
    carriers: tuple[Applied | Dropped, ...] = (Applied(**COMMON, flag_version=9), dropped)
    for carrier in carriers:
        action = decide(
            dataclasses.replace(carrier, also_applied=brought),
            SRC,
            LAYOUT,
            infra_pause_s=1,
        )
        events = [json.loads(r.value or b"") for r in action.publish]
        own = [(7, "applied")] if isinstance(carrier, Applied) else []
        assert [(e["schedule_id"], e["type"]) for e in events] == [
            (3, "applied"),
            (5, "applied"),
            *own,
        ]
        assert all(r.topic == LAYOUT.lifecycle for r in action.publish)
        assert action.commit
