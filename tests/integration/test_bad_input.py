"""Bad input loses nothing: each kind of garbage goes to the dead-letter topic with
reason `poison` and a clear message, and the worker keeps going."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from kafka import KafkaProducer

from flagsched.schemas import headers as hdr
from flagsched.schemas.events import ScheduleDue
from flagsched.schemas.headers import RecordHeaders
from tests.support.pipeline import (
    add_flag,
    add_schedule,
    header_map,
    read_topic,
    running_dispatcher,
    running_worker,
    status_is,
    wait_until,
)

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
GOOD = ScheduleDue(schedule_id=1, flag_key="k", scheduled_at=NOW, dispatched_at=NOW)
OK_HEADERS = RecordHeaders(attempt=1, due_ms=0).encode()

CASES: dict[str, tuple[str, bytes | None, bytes, list[tuple[str, bytes]], str]] = {
    # name: (topic role, key, value, headers, expected message fragment)
    "not json": ("due", b"k", b"{oops", OK_HEADERS, "not JSON"),
    "fails the model": ("due", b"k", b'{"schedule_id": "x"}', OK_HEADERS, "does not fit"),
    "unknown schema_version": (
        "due",
        b"k",
        GOOD.model_dump_json().replace('"schema_version":1', '"schema_version":2').encode(),
        OK_HEADERS,
        "unknown schema_version",
    ),
    "invalid utf-8": ("due", b"k", b"\xc3\x28\xa0\xa1", OK_HEADERS, "not UTF-8"),
    "far too large": ("due", b"k", b"{" + b" " * 200_000 + b"}", OK_HEADERS, "over the"),
    "missing retry headers": ("tier", b"k", GOOD.model_dump_json().encode(), [], "missing header"),
    "malformed retry headers": (
        "tier",
        b"k",
        GOOD.model_dump_json().encode(),
        [(hdr.ATTEMPT, b"-3"), (hdr.DUE_MS, b"soon")],
        "malformed header",
    ),
    "key does not match flag": (
        "due",
        b"other",
        GOOD.model_dump_json().encode(),
        OK_HEADERS,
        "does not match",
    ),
}


def test_each_poison_record_is_dead_lettered_and_the_worker_goes_on(settings, db):
    layout = settings.topic_layout()
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, max_request_size=1_048_576
    )
    for name, (role, key, value, headers, _) in CASES.items():
        topic = layout.due if role == "due" else layout.tier_topic(layout.tiers_s[0])
        producer.send(topic, key=key, value=value, headers=[*headers, ("x-case", name.encode())])
    producer.flush()
    producer.close()
    add_flag(db, "healthy")
    sid = add_schedule(db, "healthy", {"enabled": True})
    with running_worker(settings), running_dispatcher(settings):
        wait_until(lambda: status_is(db, sid, "applied"), what="healthy schedule applied")
        dead = read_topic(settings, layout.dead_letter, expect=len(CASES))
    assert len(dead) == len(CASES)
    for name, (_, key, value, _, fragment) in CASES.items():
        matches = [r for r in dead if fragment in header_map(r).get(hdr.ERROR_MESSAGE, "")]
        assert len(matches) == 1, f"{name}: {len(matches)} dead letters mention {fragment!r}"
        rec = matches[0]
        h = header_map(rec)
        assert h[hdr.DLT_REASON] == "poison"
        assert h[hdr.ERROR_CLASS] == "poison"
        assert (rec.key, rec.value) == (key, value)  # nothing lost: the original bytes
        assert "x-case" not in h  # the header set is rebuilt, not accumulated
        assert sum(len(k) + len(v) for k, v in rec.headers) < 4096
