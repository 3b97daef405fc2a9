"""telemetry.metrics: feed attempt results, scrape the registry's exposition text."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any, NamedTuple

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from flagsched.consumer import observe
from flagsched.consumer.decode import Coordinates
from flagsched.consumer.results import (
    Applied,
    AttemptResult,
    Cancelled,
    DeadLettered,
    Dropped,
    Held,
    Hopped,
    Outcome,
    Paused,
    Poison,
    RetryScheduled,
    Superseded,
)
from flagsched.runtime.telemetry.backlog import BacklogCollector
from flagsched.runtime.telemetry.fingerprint import fingerprint
from flagsched.runtime.telemetry.metrics import Metrics
from flagsched.schemas.events import BreakerState, Priority
from flagsched.schemas.headers import DeadLetterReason, RecordHeaders
from flagsched.schemas.topics import TopicLayout

LAYOUT = TopicLayout(prefix="fs", tiers_s=(0.5, 1.0, 30.0, 120.0, 3600.0))
DUE = Coordinates(LAYOUT.due, 0, 10, 0)
TIER_05 = Coordinates(LAYOUT.tier_topic(0.5), 1, 3, 0)
TIER_30 = Coordinates(LAYOUT.tier_topic(30.0), 0, 7, 0)


class TP(NamedTuple):
    topic: str
    partition: int


def scrape(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition text, keyed by (name, labels)."""
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return scrape(metrics).get((name, frozenset(labels.items())))


def record(m: Metrics, res: AttemptResult, coords: Coordinates) -> None:
    """What the worker does with each result when it has metrics."""
    observe.prepare(m)
    observe.observe(m, res, LAYOUT.tier_label(coords.topic))


T0 = datetime(2026, 12, 1, tzinfo=UTC)
_FAILED = {"error_class": "unknown", "error_message": "boom", "first_failure_at": None}
_ROW = {"scheduled_at": T0, "priority": Priority.NORMAL}  # what a recorded outcome reads
#: Per outcome, its result's kind and the fields that kind needs besides the ids.
_KINDS: dict[Outcome, tuple[Any, dict[str, Any]]] = {
    Outcome.APPLIED: (Applied, {**_ROW, "flag_version": 1}),
    Outcome.RETRY: (RetryScheduled, {**_ROW, "next_attempt_at": T0, **_FAILED}),
    Outcome.DEAD: (
        DeadLettered,
        {**_ROW, "reason": DeadLetterReason.EXHAUSTED, "due_ms": 0, **_FAILED},
    ),
    Outcome.SUPERSEDED: (Superseded, {**_ROW, "superseded_by": 2}),
    Outcome.CANCELLED: (Cancelled, {**_ROW}),
    Outcome.DROP: (Dropped, {"why": "stale"}),
    Outcome.POISON: (
        Poison,
        {
            "error_class": "poison",
            "error_message": "bad",
            "reason": DeadLetterReason.POISON,
            "due_ms": None,
        },
    ),
    Outcome.HOLD: (Held, {"until_ms": 5, "carried": RecordHeaders(attempt=1, due_ms=5)}),
    Outcome.HOP: (
        Hopped,
        {"topic": "fs.retry.1s", "carried": RecordHeaders(attempt=1, due_ms=5)},
    ),
    Outcome.PAUSE: (Paused, {"error_class": "infrastructure"}),
}


def result(outcome: Outcome, attempt: int = 1, **kw: Any) -> AttemptResult:
    """A result of ``outcome`` for schedule 1 of flag f, its kind's fields defaulted."""
    kind, fields = _KINDS[outcome]
    ids: dict[str, Any] = {"attempt": attempt}
    if kind is not Held:  # a held record is not decoded beyond its headers
        ids |= {"schedule_id": 1, "flag_key": "f"}
    made: AttemptResult = kind(**(ids | fields | kw))
    return made


def test_first_attempt_applied():
    m = Metrics()
    record(m, result(Outcome.APPLIED, lateness_ms=40.0), DUE)
    assert value(m, "flagsched_schedules_applied_total") == 1
    labels = {"outcome": "applied", "error_class": "none", "tier": "due", "attempt_kind": "first"}
    assert value(m, "flagsched_attempts_total", **labels) == 1
    assert value(m, "flagsched_records_total", outcome="applied", tier="due") == 1
    assert value(m, "flagsched_apply_lateness_seconds_count") == 1
    assert value(m, "flagsched_apply_lateness_seconds_sum") == pytest.approx(0.04)
    assert value(m, "flagsched_apply_lateness_seconds_bucket", le="0.05") == 1
    assert value(m, "flagsched_apply_lateness_seconds_bucket", le="0.025") == 0
    assert value(m, "flagsched_first_attempt_lateness_seconds_count") == 1
    assert value(m, "flagsched_attempts_per_applied_schedule_sum") == 1


def test_retry_then_applied_on_a_tier():
    m = Metrics()
    record(m, result(Outcome.RETRY, error_class="lock_contention", lateness_ms=5.0), DUE)
    record(m, result(Outcome.RETRY, 2, error_class="lock_contention", lateness_ms=700.0), TIER_05)
    record(m, result(Outcome.APPLIED, 3, lateness_ms=2500.0), TIER_30)
    assert value(m, "flagsched_retries_scheduled_total", error_class="lock_contention") == 2
    assert value(m, "flagsched_retries_scheduled_total", error_class="deadlock") == 0
    retry = {"outcome": "retry", "error_class": "lock_contention", "attempt_kind": "retry"}
    assert value(m, "flagsched_attempts_total", tier="0.5", **retry) == 1
    assert value(m, "flagsched_retry_lateness_seconds_count", tier="0.5") == 1
    assert value(m, "flagsched_retry_lateness_seconds_bucket", tier="30", le="2.5") == 1
    assert value(m, "flagsched_retry_lateness_seconds_bucket", tier="30", le="1.0") == 0
    assert value(m, "flagsched_first_attempt_lateness_seconds_count") == 1
    assert value(m, "flagsched_apply_lateness_seconds_sum") == pytest.approx(2.5)
    assert value(m, "flagsched_attempts_per_applied_schedule_sum") == 3
    assert value(m, "flagsched_attempts_per_applied_schedule_bucket", le="2.0") == 0
    assert value(m, "flagsched_attempts_per_applied_schedule_bucket", le="3.0") == 1


def test_dead_letters_by_reason_start_at_zero():
    m = Metrics()
    assert {
        r.value: value(m, "flagsched_dead_letters_total", reason=r.value) for r in DeadLetterReason
    } == {"exhausted": 0, "permanent": 0, "poison": 0}
    record(m, result(Outcome.DEAD, 4, reason=DeadLetterReason.EXHAUSTED), TIER_30)
    record(m, result(Outcome.DEAD, reason=DeadLetterReason.PERMANENT), DUE)
    record(m, result(Outcome.POISON), DUE)
    assert value(m, "flagsched_dead_letters_total", reason="exhausted") == 1
    assert value(m, "flagsched_dead_letters_total", reason="permanent") == 1
    assert value(m, "flagsched_dead_letters_total", reason="poison") == 1


def test_superseded_and_cancelled():
    m = Metrics()
    record(m, result(Outcome.SUPERSEDED, 2, superseded_by=9), TIER_05)
    record(m, result(Outcome.CANCELLED), DUE)
    assert value(m, "flagsched_schedules_superseded_total") == 1
    assert value(m, "flagsched_schedules_cancelled_total") == 1
    assert value(m, "flagsched_schedules_applied_total") == 0


def test_replays_are_not_counted_twice():
    m = Metrics()
    record(m, result(Outcome.APPLIED, lateness_ms=1.0), DUE)
    record(m, result(Outcome.APPLIED, replay=True), DUE)
    assert value(m, "flagsched_schedules_applied_total") == 1
    assert value(m, "flagsched_apply_lateness_seconds_count") == 1
    assert value(m, "flagsched_replays_total", outcome="applied") == 1
    assert value(m, "flagsched_records_total", outcome="applied", tier="due") == 2


@pytest.mark.parametrize("outcome", [Outcome.HOLD, Outcome.HOP, Outcome.DROP])
def test_non_attempts_only_count_as_records(outcome):
    m = Metrics()
    record(m, result(outcome, 2), TIER_30)
    samples = scrape(m)
    assert value(m, "flagsched_records_total", outcome=outcome.value, tier="30") == 1
    assert not [k for k in samples if k[0] == "flagsched_attempts_total"]


def test_pause_counts_an_infrastructure_attempt():
    m = Metrics()
    record(m, result(Outcome.PAUSE, error_class="infrastructure"), DUE)
    labels = {"error_class": "infrastructure", "tier": "due", "attempt_kind": "first"}
    assert value(m, "flagsched_attempts_total", outcome="pause", **labels) == 1


def test_observe_never_raises(caplog):
    m = Metrics()
    broken = result(Outcome.APPLIED, None)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="flagsched.consumer.observe"):
        record(m, broken, DUE)
    assert "could not record metrics" in caplog.text


@pytest.mark.parametrize(
    ("topic", "label"),
    [
        ("fs.schedule-due", "due"),
        ("fs.schedule-due.priority", "priority"),
        ("fs.retry.500ms", "0.5"),
        ("fs.retry.1s", "1"),
        ("fs.retry.2m", "120"),
        ("fs.retry.1h", "3600"),
        ("fs.retry.30s", "30"),
        ("other.retry.30s", "none"),
        ("fs.dead-letter", "none"),
        ("fs.retry.soon", "none"),
        ("fs.retry.1.2.3s", "none"),
    ],
)
def test_tier_label(topic, label):
    assert LAYOUT.tier_label(topic) == label


def test_tier_label_matches_every_tier_topic_of_a_layout():
    ladder = (0.0001234, 0.25, 1.5, 7.0, 90.0, 7200.0)
    layout = TopicLayout(prefix="x.y", tiers_s=ladder)
    assert {layout.tier_label(t): s for t, s in layout.tier_topics.items()} == {
        f"{s:g}": s for s in ladder
    }


def test_lag_from_end_offsets_and_positions():
    m = Metrics()
    a, b = TP("fs.schedule-due", 0), TP("fs.retry.1s", 3)
    m.update_lag({a: 120, b: 5}, {a: 100, b: 9})
    assert value(m, "flagsched_consumer_lag_records", topic=a.topic, partition="0") == 20
    assert value(m, "flagsched_consumer_lag_records", topic=b.topic, partition="3") == 0
    m.forget_partitions([a, TP("never", 1)])
    assert value(m, "flagsched_consumer_lag_records", topic=a.topic, partition="0") is None
    m.set_lag("t", 2, 7)
    assert value(m, "flagsched_consumer_lag_records", topic="t", partition="2") == 7


class FakeConsumer:
    """The three kafka-python calls sample_consumer_lag makes."""

    def __init__(self, state: dict[TP, tuple[int | None, int | None]]) -> None:
        self.state = state

    def assignment(self) -> set[TP]:
        return set(self.state)

    def highwater(self, tp: TP) -> int | None:
        return self.state[tp][0]

    def position(self, tp: TP, timeout_ms: int | None = None) -> int | None:
        assert timeout_ms == 0  # never blocks the poll loop
        return self.state[tp][1]


def test_lag_sampled_from_a_consumer_and_revoked_partitions_dropped():
    m = Metrics()
    a, b, c = TP("fs.schedule-due", 0), TP("fs.retry.1s", 1), TP("fs.retry.5s", 0)
    consumer = FakeConsumer({a: (50, 40), b: (9, 9), c: (None, 3)})
    assert m.sample_consumer_lag(consumer) is False  # c has not been fetched yet
    assert value(m, "flagsched_consumer_lag_records", topic=a.topic, partition="0") == 10
    assert value(m, "flagsched_consumer_lag_records", topic=b.topic, partition="1") == 0
    assert value(m, "flagsched_consumer_lag_records", topic=c.topic, partition="0") is None
    consumer.state = {a: (60, 60)}
    assert m.sample_consumer_lag(consumer) is True
    assert value(m, "flagsched_consumer_lag_records", topic=a.topic, partition="0") == 0
    assert value(m, "flagsched_consumer_lag_records", topic=b.topic, partition="1") is None


def test_lag_sampling_never_raises():
    class Closed:
        def assignment(self) -> set[TP]:
            raise RuntimeError("consumer closed")

    assert Metrics().sample_consumer_lag(Closed()) is False


def test_breaker_state_and_transitions():
    m = Metrics()
    assert value(m, "flagsched_breaker_state") == 0
    m.set_breaker("closed")
    m.set_breaker(BreakerState.OPEN)
    m.set_breaker("half-open")
    m.set_breaker("half_open")
    m.set_breaker("open")
    assert value(m, "flagsched_breaker_state") == 2
    assert value(m, "flagsched_breaker_transitions_total", to="open") == 2
    assert value(m, "flagsched_breaker_transitions_total", to="half_open") == 1
    assert value(m, "flagsched_breaker_transitions_total", to="closed") == 0
    with pytest.raises(ValueError, match="unknown breaker state"):
        m.set_breaker("ajar")


def test_batches_and_dispatcher_counts():
    m = Metrics()
    m.observe_batch(3)
    m.observe_batch(250)
    m.observe_dispatched(4)
    m.observe_dispatched(0)
    m.observe_rewakes(2)
    assert value(m, "flagsched_batch_records_count") == 2
    assert value(m, "flagsched_batch_records_bucket", le="5.0") == 1
    assert value(m, "flagsched_schedules_dispatched_total") == 4
    assert value(m, "flagsched_stuck_rewakes_total") == 2


def test_each_instance_has_its_own_registry():
    one, two = Metrics(), Metrics()
    record(one, result(Outcome.APPLIED), DUE)
    assert value(one, "flagsched_schedules_applied_total") == 1
    assert value(two, "flagsched_schedules_applied_total") == 0


def test_serve_on_port_zero_and_stop():
    m = Metrics()
    record(m, result(Outcome.APPLIED), DUE)
    server = m.serve(port=0)
    try:
        assert server.port > 0
        with urllib.request.urlopen(server.url, timeout=5) as resp:
            body = resp.read().decode()
        assert "flagsched_schedules_applied_total 1.0" in body
    finally:
        server()  # the server is its own stop callable
    server.stop()  # twice is harmless
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url, timeout=2)


def test_backlog_scrape_survives_a_database_that_is_down():
    m = Metrics()
    collector = BacklogCollector("postgresql://nobody@127.0.0.1:1/none", (1.0, 5.0))
    collector.register(m.registry)
    for expected_errors in (1, 2):  # each scrape tries again: one error each
        samples = scrape(m)
        assert samples[("flagsched_backlog_scrape_errors_total", frozenset())] == expected_errors
        assert samples[("flagsched_backlog_up", frozenset())] == 0
    names = {name for name, _ in samples}
    assert "flagsched_retry_backlog_schedules" not in names  # no stale numbers
    assert "flagsched_schedules_applied_total" in names  # the rest of the scrape is intact


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "FlagNotFound: flag 'missing.f' does not exist",
            "FlagNotFound: flag <str> does not exist",
        ),
        ('relation "feature_flags" tuple (0,12) v2', "relation <str> tuple (<n>,<n>) v2"),
        ("schedule 42 took 2000ms\n  at  3.5s", "schedule <n> took <n>ms at <n>s"),
        ("trace 4bf92f3577b34da6a3ce929d0e0e4736 id 0xdeadBEEF", "trace <hex> id <hex>"),
        ("id 123e4567-e89b-12d3-a456-426614174000", "id <uuid>"),
        (None, ""),
    ],
)
def test_fingerprint(message, expected):
    assert fingerprint(message) == expected


def test_fingerprint_is_bounded():
    assert len(fingerprint("x" * 1000)) == 160
