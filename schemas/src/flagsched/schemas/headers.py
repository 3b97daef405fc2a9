"""The header set on schedule-due, retry-tier and dead-letter records.

Every value is a UTF-8 string; numbers are decimal, times are epoch milliseconds.
On every republish the whole set is rebuilt from :class:`RecordHeaders`, so
headers are replaced, never accumulated, however many hops a record makes.

| header | on | meaning |
|---|---|---|
| flagsched-attempt | all | 1-based number of the attempt this record asks |
| flagsched-due-ms | all | absolute time the attempt is due (epoch ms) |
| flagsched-first-failure-ms | retry, dead letter | when attempt 1 failed (epoch ms) |
| flagsched-origin-topic | retry, dead letter | topic the failed attempt was consumed from |
| flagsched-origin-partition | retry, dead letter | its partition |
| flagsched-origin-offset | retry, dead letter | its offset |
| flagsched-origin-group | retry, dead letter | consumer group that processed it |
| flagsched-error-class | retry, dead letter | last error class (schemas.error_classes) |
| flagsched-error-message | retry, dead letter | last error message, UTF-8, <= 4096 bytes |
| flagsched-dlt-reason | dead letter | exhausted / permanent / poison |
| flagsched-order-waits | retry tier | waits of this attempt for an older schedule (due order) |
| flagsched-not-before-ms | retry tier | such a waiting record is not tried before (epoch ms) |
| traceparent | all (optional) | W3C trace context of the attempt that sent it |
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flagsched.schemas.error_message import ERROR_MESSAGE_MAX_BYTES, ErrorMessage
from flagsched.schemas.error_message import truncate_utf8 as truncate_utf8
from flagsched.schemas.errors import PoisonRecord

ATTEMPT = "flagsched-attempt"
DUE_MS = "flagsched-due-ms"
FIRST_FAILURE_MS = "flagsched-first-failure-ms"
ORIGIN_TOPIC = "flagsched-origin-topic"
ORIGIN_PARTITION = "flagsched-origin-partition"
ORIGIN_OFFSET = "flagsched-origin-offset"
ORIGIN_GROUP = "flagsched-origin-group"
ERROR_CLASS = "flagsched-error-class"
ERROR_MESSAGE = "flagsched-error-message"
DLT_REASON = "flagsched-dlt-reason"
ORDER_WAITS = "flagsched-order-waits"
NOT_BEFORE_MS = "flagsched-not-before-ms"
TRACEPARENT = "traceparent"

#: The longest header flagsched writes is the error message; a longer one is poison.
_MAX_HEADER_VALUE_BYTES = ERROR_MESSAGE_MAX_BYTES

KafkaHeaders = Sequence[tuple[str, bytes | None]]


class DeadLetterReason(StrEnum):
    """Why a record was dead-lettered."""

    EXHAUSTED = "exhausted"
    PERMANENT = "permanent"
    POISON = "poison"


class RecordHeaders(BaseModel):
    """Typed view of the header set. Build a new one for every republish."""

    model_config = ConfigDict(frozen=True)

    attempt: int = Field(ge=1, le=1_000_000)
    due_ms: int = Field(ge=0)
    first_failure_ms: int | None = None
    origin_topic: str | None = None
    origin_partition: int | None = None
    origin_offset: int | None = None
    origin_group: str | None = None
    error_class: str | None = None
    error_message: ErrorMessage | None = None
    dlt_reason: DeadLetterReason | None = None
    order_waits: int | None = Field(default=None, ge=1, le=1_000_000)
    not_before_ms: int | None = Field(default=None, ge=0)
    traceparent: str | None = None

    def encode(self) -> list[tuple[str, bytes]]:
        """Kafka header list; absent fields are left out, the message is size-bounded."""
        pairs: list[tuple[str, str | int | None]] = [
            (ATTEMPT, self.attempt),
            (DUE_MS, self.due_ms),
            (FIRST_FAILURE_MS, self.first_failure_ms),
            (ORIGIN_TOPIC, self.origin_topic),
            (ORIGIN_PARTITION, self.origin_partition),
            (ORIGIN_OFFSET, self.origin_offset),
            (ORIGIN_GROUP, self.origin_group),
            (ERROR_CLASS, self.error_class),
            (ERROR_MESSAGE, self.error_message),  # bounded by its type
            (DLT_REASON, self.dlt_reason.value if self.dlt_reason else None),
            (ORDER_WAITS, self.order_waits),
            (NOT_BEFORE_MS, self.not_before_ms),
            (TRACEPARENT, self.traceparent),
        ]
        return [(k, str(v).encode()) for k, v in pairs if v is not None]

    @classmethod
    def decode(cls, headers: Iterable[tuple[str, bytes | None]] | None) -> RecordHeaders:
        """Parse the header set; raise PoisonRecord naming what is missing or malformed."""
        raw: dict[str, str] = {}
        for key, value in headers or ():
            if key not in _KNOWN or value is None:
                continue
            if len(value) > _MAX_HEADER_VALUE_BYTES:
                raise PoisonRecord(f"header {key} is {len(value)} bytes")
            try:
                raw[key] = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise PoisonRecord(f"header {key} is not UTF-8") from exc
        if ATTEMPT not in raw or DUE_MS not in raw:
            raise PoisonRecord(f"missing header {ATTEMPT if ATTEMPT not in raw else DUE_MS}")
        try:
            return cls.model_validate({_KNOWN[k]: v for k, v in raw.items()})
        except ValidationError as exc:
            first = exc.errors()[0]
            raise PoisonRecord(f"malformed header {first['loc'][0]}: {first['msg']}") from exc


_KNOWN = {
    ATTEMPT: "attempt",
    DUE_MS: "due_ms",
    FIRST_FAILURE_MS: "first_failure_ms",
    ORIGIN_TOPIC: "origin_topic",
    ORIGIN_PARTITION: "origin_partition",
    ORIGIN_OFFSET: "origin_offset",
    ORIGIN_GROUP: "origin_group",
    ERROR_CLASS: "error_class",
    ERROR_MESSAGE: "error_message",
    DLT_REASON: "dlt_reason",
    ORDER_WAITS: "order_waits",
    NOT_BEFORE_MS: "not_before_ms",
    TRACEPARENT: "traceparent",
}
