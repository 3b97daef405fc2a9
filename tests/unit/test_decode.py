"""Bad input becomes a PoisonRecord with a clear reason."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from flagsched.consumer.decode import decode_event
from flagsched.runtime.errors import PoisonRecord
from flagsched.schemas.events import ScheduleDue

NOW = datetime(2026, 12, 24, 23, 59, 30, tzinfo=UTC)
GOOD = ScheduleDue(schedule_id=7, flag_key="promo", scheduled_at=NOW, dispatched_at=NOW)


@dataclass
class Rec:
    value: bytes | None
    key: bytes | None = b"promo"


def test_good_event_decodes():
    assert decode_event(Rec(GOOD.model_dump_json().encode()), max_bytes=65536) == GOOD


@pytest.mark.parametrize(
    ("value", "key", "fragment"),
    [
        (b"not json", b"promo", "not JSON"),
        (b'{"schedule_id": 1}', b"promo", "does not fit"),
        (
            GOOD.model_dump_json().replace('"schema_version":1', '"schema_version":9').encode(),
            b"promo",
            "unknown schema_version 9",
        ),
        (b"\xff\xfe", b"promo", "not UTF-8"),
        (b"x" * 70000, b"promo", "over the 65536-byte limit"),
        (GOOD.model_dump_json().encode(), b"other", "does not match"),
        (None, b"promo", "no value"),
    ],
)
def test_poison(value, key, fragment):
    with pytest.raises(PoisonRecord, match=fragment):
        decode_event(Rec(value, key), max_bytes=65536)
