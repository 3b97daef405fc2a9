"""Turning a raw Kafka record into a typed delivery, or a PoisonRecord saying why not."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from flagsched.runtime.errors import PoisonRecord
from flagsched.schemas.events import ScheduleDue
from flagsched.schemas.headers import RecordHeaders


@dataclass(frozen=True)
class Coordinates:
    """Where a record came from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int


@dataclass(frozen=True)
class Delivery:
    """A decoded schedule-due record with its header set."""

    event: ScheduleDue
    headers: RecordHeaders
    coords: Coordinates
    trace_id: str | None = None  # of the attempt's span, stored on the attempt row
    #: Set on a waiting schedule brought by another wake-up (consumer/dueorder.py): the
    #: schedule id of that wake-up, whose coordinates ``coords`` are.
    applied_with: int | None = None


def coordinates(record: Any) -> Coordinates:
    """The source coordinates of a kafka-python ConsumerRecord."""
    return Coordinates(record.topic, record.partition, record.offset, record.timestamp)


def decode_headers(record: Any) -> RecordHeaders:
    """The header set; PoisonRecord when it is missing or malformed."""
    return RecordHeaders.decode(record.headers)


def decode_event(record: Any, *, max_bytes: int) -> ScheduleDue:
    """Validate size, encoding, schema version, model and key of a record's value."""
    value = record.value
    if value is None:
        raise PoisonRecord("record has no value")
    if len(value) > max_bytes:
        raise PoisonRecord(f"value is {len(value)} bytes, over the {max_bytes}-byte limit")
    try:
        text = bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PoisonRecord(f"value is not UTF-8: {exc.reason} at byte {exc.start}") from exc
    try:
        event = ScheduleDue.model_validate_json(text)
    except ValidationError as exc:
        raise PoisonRecord(_describe(exc)) from exc
    key = record.key.decode("utf-8", errors="replace") if record.key is not None else None
    if key != event.flag_key:
        raise PoisonRecord(f"record key {key!r} does not match the event's flag {event.flag_key!r}")
    return event


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "value"
    if first["type"] == "json_invalid":
        return f"value is not JSON: {first['msg']}"
    if where == "schema_version":
        return f"unknown schema_version {first.get('input')!r}"
    return f"event does not fit the schedule-due model: {where}: {first['msg']}"
