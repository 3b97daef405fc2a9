"""Outcome -> action: one table, every branch."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

from flagsched.consumer.decode import Coordinates
from flagsched.consumer.outcome import AttemptResult, Outcome, Source, decide
from flagsched.schemas import headers as hdr
from flagsched.schemas.headers import DeadLetterReason, RecordHeaders
from flagsched.schemas.topics import TopicLayout

LAYOUT = TopicLayout(prefix="fs", tiers_s=(1.0, 5.0, 30.0))
SRC = Source(Coordinates("fs.retry.5s", 1, 99, 0), b"promo", b"{}", "workers")
NOW = 1_800_000_000.0


def result(outcome: Outcome, **kw) -> AttemptResult:
    return AttemptResult(outcome, 2, 7, "promo", datetime.fromtimestamp(NOW, UTC), **kw)


def test_retry_goes_to_the_largest_fitting_tier_with_fresh_headers():
    nxt = datetime.fromtimestamp(NOW + 12, UTC)
    action = decide(
        result(
            Outcome.RETRY,
            next_attempt_at=nxt,
            error_class="deadlock",
            error_message="boom",
            first_failure_at=nxt,
        ),
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
    assert json.loads(life.value or b"")["type"] == "retry_scheduled"
    assert action.commit


def test_retry_sooner_than_the_smallest_tier_uses_the_smallest_tier():
    nxt = datetime.fromtimestamp(NOW + 0.2, UTC)
    action = decide(
        result(Outcome.RETRY, next_attempt_at=nxt), SRC, LAYOUT, infra_pause_s=1, clock=lambda: NOW
    )
    assert action.publish[0].topic == "fs.retry.1s"


def test_dead_goes_to_the_dead_letter_topic_with_reason_and_lifecycle():
    action = decide(
        result(Outcome.DEAD, dlt_reason=DeadLetterReason.EXHAUSTED, due_ms=5),
        SRC,
        LAYOUT,
        infra_pause_s=1,
    )
    dlt, life = action.publish
    assert dlt.topic == LAYOUT.dead_letter
    assert dict(dlt.headers)[hdr.DLT_REASON] == b"exhausted"
    assert dict(dlt.headers)[hdr.ORIGIN_TOPIC] == b"fs.retry.5s"
    assert json.loads(life.value or b"")["type"] == "dead_lettered"


def test_poison_has_no_lifecycle_event():
    action = decide(
        AttemptResult(
            Outcome.POISON,
            1,
            error_class="poison",
            error_message="bad",
            dlt_reason=DeadLetterReason.POISON,
        ),
        SRC,
        LAYOUT,
        infra_pause_s=1,
    )
    [dlt] = action.publish
    assert dict(dlt.headers)[hdr.DLT_REASON] == b"poison"


def test_hold_pause_drop_and_hop():
    assert not decide(
        AttemptResult(Outcome.HOLD, 1, hold_until_ms=5), SRC, LAYOUT, infra_pause_s=1
    ).commit
    pause = decide(AttemptResult(Outcome.PAUSE, 1), SRC, LAYOUT, infra_pause_s=2.5)
    assert (pause.commit, pause.pause_partitions_s) == (False, 2.5)
    drop = decide(AttemptResult(Outcome.DROP, 1), SRC, LAYOUT, infra_pause_s=1)
    assert (drop.commit, drop.publish) == (True, ())
    carried = RecordHeaders(attempt=2, due_ms=9, error_class="deadlock")
    hop = decide(
        AttemptResult(Outcome.HOP, 2, hop_topic="fs.retry.1s", carried=carried),
        SRC,
        LAYOUT,
        infra_pause_s=1,
    )
    assert RecordHeaders.decode(hop.publish[0].headers) == carried


def test_applied_superseded_cancelled_tell_subscribers():
    for outcome, kind in [
        (Outcome.APPLIED, "applied"),
        (Outcome.SUPERSEDED, "superseded"),
        (Outcome.CANCELLED, "cancelled"),
    ]:
        [life] = decide(result(outcome), SRC, LAYOUT, infra_pause_s=1).publish
        assert json.loads(life.value or b"")["type"] == kind and life.key == b"promo"


def test_schedules_an_attempt_brought_are_announced_first_in_due_order():
    brought = tuple(
        AttemptResult(Outcome.APPLIED, 1, sid, "promo", datetime.fromtimestamp(NOW, UTC))
        for sid in (3, 5)
    )
    for carrier in (result(Outcome.APPLIED, flag_version=9), result(Outcome.DROP)):
        action = decide(
            dataclasses.replace(carrier, also_applied=brought),
            SRC,
            LAYOUT,
            infra_pause_s=1,
        )
        events = [json.loads(r.value or b"") for r in action.publish]
        own = [(7, "applied")] if carrier.outcome is Outcome.APPLIED else []
        assert [(e["schedule_id"], e["type"]) for e in events] == [
            (3, "applied"),
            (5, "applied"),
            *own,
        ]
        assert all(r.topic == LAYOUT.lifecycle for r in action.publish)
        assert action.commit
