"""Pure parts of the hardening rules: the log escaper, the update bounds, the due-time
bound, the breaker's rule for another worker's OPEN, and the error table's decider."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flagsched.consumer.breaker import Breaker, BreakerConfig
from flagsched.consumer.classify import classify, settle
from flagsched.consumer.holds import latest_due_ms
from flagsched.consumer.jsonb import Unreadable, loads
from flagsched.runtime.errors import InvalidRetryPolicy, InvalidSchedule
from flagsched.runtime.logtext import printable
from flagsched.schemas.error_classes import ErrorClass
from flagsched.schemas.retry.policy import MAX_DELAY_S
from flagsched.schemas.topics import TopicLayout
from flagsched.schemas.updates import (
    MAX_UPDATE_BYTES,
    MAX_UPDATE_DEPTH,
    FlagUpdate,
    json_depth,
)

# --- printable -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "logged"),
    [
        ("plain-key_1", "plain-key_1"),
        ("a\r\nforged line", "a\\r\\nforged line"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("sep\u2028x\x85", "sep\\u2028x\\x85"),
        (b"bytes\n", "bytes\\n"),
        ("é ü", "é ü"),
    ],
)
def test_printable_escapes_what_would_forge_a_line_or_a_colour(raw, logged):
    assert printable(raw) == logged


@given(st.text(max_size=500))
def test_printable_is_one_bounded_printable_line(text):
    out = printable(text, limit=50)
    assert out.isprintable()
    assert len(out) <= 50 * 10 + 3  # each kept character escapes to at most \\UXXXXXXXX


# --- update bounds -----------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=20,
)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


@given(json_values)
def test_json_depth_is_the_nesting_of_objects_and_arrays(value):
    assert json_depth(value) == _depth(value)


def nested(levels: int) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    node = doc
    for _ in range(levels - 1):
        node["a"] = {}
        node = node["a"]
    return doc


def test_an_update_at_the_bounds_is_valid_and_one_past_them_is_not():
    FlagUpdate.model_validate({"config": nested(MAX_UPDATE_DEPTH - 1)})
    with pytest.raises(ValueError, match="levels deep"):
        FlagUpdate.model_validate({"config": nested(MAX_UPDATE_DEPTH)})
    with pytest.raises(ValueError, match="levels deep"):
        FlagUpdate.model_validate({"config": nested(5000)})  # no RecursionError either
    big = {"config": {"v": "x" * MAX_UPDATE_BYTES}}
    with pytest.raises(ValueError, match="bytes of JSON"):
        FlagUpdate.model_validate(big)


def test_an_unreadably_deep_document_loads_as_unreadable():
    deep = "[" * 5000 + "]" * 5000
    assert isinstance(loads(deep.encode()), Unreadable)
    assert loads(b'{"a": [1]}') == {"a": [1]}


# --- the due-time bound --------------------------------------------------------------------


def test_a_due_topic_record_may_carry_the_lookahead_plus_the_largest_tier():
    layout = TopicLayout(tiers_s=(1.0, 60.0))
    now = 1_000_000
    assert latest_due_ms(layout, layout.due, now, 30.0) == now + 90_000
    assert latest_due_ms(layout, layout.priority, now, 30.0) == now + 90_000
    tier = layout.tier_topic(60.0)
    assert latest_due_ms(layout, tier, now, 30.0) == now + int((MAX_DELAY_S + 60) * 1000)


# --- the breaker and another worker's OPEN ------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_remote_open_is_probed_by_the_follower_and_ignored_after_its_probe_answered():
    clock = Clock()
    breaker = Breaker(BreakerConfig(probe_base_s=0.5, probe_cap_s=1.0, stale_s=60.0), clock=clock)
    assert breaker.open_remote() and breaker.is_open
    clock.now += 1.0  # past the first probe's backoff: the follower probes by itself
    assert breaker.probe_due()
    breaker.probe_result(True)
    assert not breaker.is_open
    clock.now += 30.0
    assert not breaker.open_remote() and not breaker.is_open  # the database answered us
    clock.now += 31.0
    assert breaker.open_remote() and breaker.is_open  # after stale_s, followed again


def test_a_follower_whose_probe_fails_stays_open():
    clock = Clock()
    breaker = Breaker(BreakerConfig(probe_base_s=0.5, probe_cap_s=1.0), clock=clock)
    breaker.open_remote()
    clock.now += 1.0
    assert breaker.probe_due()
    breaker.probe_result(False)
    assert breaker.is_open
    assert breaker.open_remote() is False  # already open: nothing changes


def test_only_an_outage_this_worker_saw_ends_with_a_drain():
    clock = Clock()
    config = BreakerConfig(probe_base_s=0.5, probe_cap_s=1.0, stale_s=60.0)
    # A hint (forged, stale or real) whose first probe the database answers: no drain.
    hinted = Breaker(config, clock=clock)
    hinted.open_remote()
    clock.now += 1.0
    assert hinted.probe_due()
    hinted.probe_result(True)
    assert not hinted.is_open and not hinted.closed_after_outage
    # A hint whose probe fails: this worker saw the outage, so it drains when it closes,
    # whoever closes it.
    follower = Breaker(config, clock=clock)
    follower.open_remote()
    clock.now += 1.0
    assert follower.probe_due()
    follower.probe_result(False)
    assert follower.close_remote() and follower.closed_after_outage
    # Its own failures opened it: a drain, and the next hinted open starts afresh.
    opener = Breaker(
        BreakerConfig(threshold=2, probe_base_s=0.5, probe_cap_s=1.0, stale_s=0.0), clock=clock
    )
    opener.record_failure()
    assert opener.record_failure() and opener.is_open
    clock.now += 1.0
    assert opener.probe_due()
    opener.probe_result(True)
    assert opener.closed_after_outage
    assert opener.open_remote()
    assert opener.close_remote() and not opener.closed_after_outage


# --- the error table ---------------------------------------------------------------------------


def test_the_new_row_errors_are_permanent_with_their_own_class():
    assert classify(InvalidRetryPolicy("x")).error_class is ErrorClass.INVALID_RETRY_POLICY
    assert classify(InvalidSchedule("x")).error_class is ErrorClass.INVALID_SCHEDULE
    assert classify(InvalidRetryPolicy("x")).permanent


def test_settle_re_raises_what_pauses_and_returns_the_rest():
    with pytest.raises(psycopg.OperationalError):
        settle(psycopg.OperationalError("server closed the connection"))
    verdict = settle(KeyError("odd"))
    assert (verdict.error_class, verdict.pauses, verdict.permanent) == (
        ErrorClass.UNKNOWN,
        False,
        False,
    )
    assert json.dumps(verdict.error_class) == '"unknown"'
