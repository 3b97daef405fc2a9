"""The error-message bound is one number, in bytes, in the contract (schemas/error_message.py):
the setting cannot exceed it, and at the largest allowed setting no model refuses a message."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flagsched.consumer.decode import Coordinates
from flagsched.consumer.outcome import Source, decide
from flagsched.consumer.results import DeadLettered, RetryScheduled
from flagsched.runtime.errors import ConfigError
from flagsched.runtime.settings import load_settings
from flagsched.schemas import headers as hdr
from flagsched.schemas.error_message import ERROR_MESSAGE_MAX_BYTES, truncate_utf8
from flagsched.schemas.events import LifecycleEvent, LifecycleType, Priority
from flagsched.schemas.headers import DeadLetterReason, RecordHeaders
from flagsched.schemas.topics import TopicLayout

LAYOUT = TopicLayout(prefix="fs", tiers_s=(1.0, 5.0, 30.0))
SRC = Source(Coordinates("fs.retry.5s", 1, 99, 0), b"promo", b"{}", "workers")
NOW = datetime(2026, 12, 1, tzinfo=UTC)
# Long texts of 1- to 4-byte characters: a cut must land on a character boundary.
messages = st.text(st.characters(codec="utf-8"), min_size=0, max_size=3 * ERROR_MESSAGE_MAX_BYTES)


def test_a_setting_above_the_contract_bound_is_refused_naming_itself():
    with pytest.raises(ConfigError, match="FLAGSCHED_ERROR_MESSAGE_MAX_BYTES"):
        load_settings(error_message_max_bytes=ERROR_MESSAGE_MAX_BYTES + 1)
    top = load_settings(error_message_max_bytes=ERROR_MESSAGE_MAX_BYTES)
    assert top.error_message_max_bytes == ERROR_MESSAGE_MAX_BYTES


@given(text=messages)
def test_at_the_largest_setting_no_model_refuses_a_message(text):
    limit = load_settings(error_message_max_bytes=ERROR_MESSAGE_MAX_BYTES).error_message_max_bytes
    message = truncate_utf8(f"OperationalError: {text}", limit)  # as bookkeeping cuts it
    assert message is not None and len(message.encode()) <= ERROR_MESSAGE_MAX_BYTES
    failed: dict[str, Any] = {
        "attempt": 2,
        "schedule_id": 7,
        "flag_key": "promo",
        "scheduled_at": NOW,
        "priority": Priority.NORMAL,
        "error_class": "unknown",
        "error_message": message,
        "first_failure_at": NOW,
    }
    results = (
        RetryScheduled(**failed, next_attempt_at=NOW),
        DeadLettered(**failed, reason=DeadLetterReason.EXHAUSTED, due_ms=1),
    )
    for result in results:
        forwarded, life = decide(result, SRC, LAYOUT, infra_pause_s=1).publish
        # What a subscriber decodes: the header set and the lifecycle event, whole.
        assert RecordHeaders.decode(forwarded.headers).error_message == message
        assert LifecycleEvent.model_validate_json(life.value or b"").error_message == message


@given(text=messages)
def test_a_model_given_a_longer_message_cuts_it_instead_of_refusing_it(text):
    event = LifecycleEvent(
        type=LifecycleType.DEAD_LETTERED,
        schedule_id=1,
        flag_key="promo",
        attempt=1,
        occurred_at=NOW,
        error_message=text,
    )
    assert event.error_message is not None
    assert len(event.error_message.encode()) <= ERROR_MESSAGE_MAX_BYTES
    assert event.error_message == truncate_utf8(text, ERROR_MESSAGE_MAX_BYTES)
    header = dict(RecordHeaders(attempt=1, due_ms=0, error_message=text).encode())
    assert len(header.get(hdr.ERROR_MESSAGE, b"")) <= ERROR_MESSAGE_MAX_BYTES
    assert json.loads(event.model_dump_json())["error_message"] == event.error_message
