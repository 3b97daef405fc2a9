"""The header set: round trip, size bounds, and poison on bad input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flagsched.runtime.errors import PoisonRecord
from flagsched.schemas import headers as hdr
from flagsched.schemas.error_message import ERROR_MESSAGE_MAX_BYTES, truncate_utf8
from flagsched.schemas.headers import DeadLetterReason, RecordHeaders


def full() -> RecordHeaders:
    return RecordHeaders(
        attempt=3,
        due_ms=1_700_000_000_000,
        first_failure_ms=1_699_999_999_000,
        origin_topic="fs.retry.5s",
        origin_partition=2,
        origin_offset=41,
        origin_group="g",
        error_class="lock_contention",
        error_message="LockNotAvailable: x",
        dlt_reason=DeadLetterReason.EXHAUSTED,
        traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01",
    )


def test_round_trip_and_utf8_strings():
    encoded = full().encode()
    assert all(isinstance(v, bytes) for _, v in encoded)
    assert dict(encoded)[hdr.ATTEMPT] == b"3"
    assert RecordHeaders.decode(encoded) == full()


def test_unknown_headers_are_not_carried_over():
    encoded = [*full().encode(), ("x-other", b"1"), ("x-other", b"2")]
    again = RecordHeaders.decode(encoded).encode()
    assert [k for k, _ in again if k.startswith("x-")] == []
    assert len(again) == len(full().encode())


@given(st.text(min_size=0, max_size=5000))
def test_error_message_is_bounded_and_valid_utf8(text):
    out = truncate_utf8(text, 1024)
    assert out is not None
    assert len(out.encode("utf-8")) <= 1024
    value = dict(RecordHeaders(attempt=1, due_ms=0, error_message=text).encode()).get(
        hdr.ERROR_MESSAGE, b""
    )
    assert len(value) <= ERROR_MESSAGE_MAX_BYTES
    value.decode("utf-8")


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ([], "missing header flagsched-attempt"),
        ([(hdr.ATTEMPT, b"1")], "missing header flagsched-due-ms"),
        ([(hdr.ATTEMPT, b"one"), (hdr.DUE_MS, b"1")], "malformed header attempt"),
        ([(hdr.ATTEMPT, b"0"), (hdr.DUE_MS, b"1")], "malformed header attempt"),
        ([(hdr.ATTEMPT, b"\xff"), (hdr.DUE_MS, b"1")], "not UTF-8"),
        ([(hdr.ATTEMPT, b"1"), (hdr.DUE_MS, b"1"), (hdr.ERROR_MESSAGE, b"x" * 5000)], "bytes"),
    ],
)
def test_bad_headers_are_poison_with_a_reason(headers, fragment):
    with pytest.raises(PoisonRecord, match=fragment):
        RecordHeaders.decode(headers)
