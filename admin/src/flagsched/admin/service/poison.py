"""Poison records: dead letters with no schedule row (undecodable, or naming a schedule
that does not exist). They live only in the dead-letter topic, so they are listed from
it, and an admin may republish one, explicitly, by partition and offset.

A republish goes through the outbox like every other admin record (audited in the same
transaction) to the topic the record came from, with its original key and value and a
fresh header set: attempt 1 (or the attempt it carried), due now.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from kafka import TopicPartition

from flagsched.admin.service import audit, outbox
from flagsched.admin.service.access import Actor
from flagsched.admin.service.env import Env
from flagsched.admin.service.errors import InvalidInput, NotFound
from flagsched.admin.service.models import PoisonRecord, PoisonRepublish, Republished
from flagsched.admin.service.mutation import Outcome
from flagsched.runtime.clients import make_consumer
from flagsched.runtime.db.connect import DictConnection
from flagsched.schemas.events import to_epoch_ms
from flagsched.schemas.headers import (
    ATTEMPT,
    DLT_REASON,
    ERROR_CLASS,
    ERROR_MESSAGE,
    ORIGIN_TOPIC,
    RecordHeaders,
)

log = logging.getLogger(__name__)

#: How long one scan of the dead-letter topic may take.
SCAN_S = 5.0
_PREVIEW_BYTES = 512


def _headers(record: Any) -> dict[str, str]:
    return {k: (v or b"").decode("utf-8", "replace") for k, v in record.headers or []}


def escape_bytes(value: bytes) -> str:
    """``value`` as printable ASCII, unambiguous: a printable ASCII byte as itself, a
    backslash doubled, any other byte as ``\\xNN``."""
    return "".join(
        "\\\\" if b == 0x5C else chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}" for b in value
    )


def _view(record: Any) -> PoisonRecord:
    h = _headers(record)
    value = record.value or b""
    return PoisonRecord(
        partition=record.partition,
        offset=record.offset,
        timestamp=datetime.fromtimestamp(record.timestamp / 1000, UTC),
        key=None if record.key is None else record.key.decode("utf-8", "replace"),
        value_preview=value[:_PREVIEW_BYTES].decode("utf-8", "replace"),
        value_escaped=escape_bytes(value[:_PREVIEW_BYTES]),
        value_bytes=len(value),
        error_class=h.get(ERROR_CLASS),
        error_message=h.get(ERROR_MESSAGE),
        origin_topic=h.get(ORIGIN_TOPIC),
    )


def _scan(env: Env, *, last: int, only: tuple[int, int] | None = None) -> list[Any]:
    """The poison records among the last ``last`` records of each dead-letter partition
    (or the one record at ``only`` = (partition, offset))."""
    topic = env.layout.dead_letter
    consumer = make_consumer(env.settings, group_id=None, consumer_timeout_ms=500)
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if only is not None:
            partitions = [tp for tp in partitions if tp.partition == only[0]]
        if not partitions:
            return []
        consumer.assign(partitions)
        ends = consumer.end_offsets(partitions)
        begins = consumer.beginning_offsets(partitions)
        for tp in partitions:
            start = only[1] if only is not None else max(begins[tp], ends[tp] - last)
            consumer.seek(tp, start)
        found: list[Any] = []
        deadline = time.monotonic() + SCAN_S
        pending = {tp for tp in partitions if consumer.position(tp) < ends[tp]}
        while pending and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200).items():
                for r in records:
                    if only is not None and r.offset != only[1]:
                        continue
                    if _headers(r).get(DLT_REASON) == "poison":
                        found.append(r)
                if consumer.position(tp) >= ends[tp] or (only is not None and records):
                    pending.discard(tp)
        return found
    finally:
        consumer.close()


def list_poison(env: Env, *, last: int = 1000) -> list[PoisonRecord]:
    """Poison records among the last ``last`` records of each partition, newest first."""
    records = _scan(env, last=last)
    return sorted((_view(r) for r in records), key=lambda p: (p.timestamp, p.offset), reverse=True)


def republish(conn: DictConnection, env: Env, actor: Actor, body: PoisonRepublish) -> Outcome:
    """Queue one poison record for its origin topic again (admin only; audited)."""
    found = _scan(env, last=0, only=(body.partition, body.offset))
    if not found:
        raise NotFound(f"no poison record at partition {body.partition} offset {body.offset}")
    record = found[0]
    view = _view(record)
    target = body.topic or view.origin_topic or env.layout.due
    if target not in env.layout.consumed:
        raise InvalidInput("topic", f"{target!r} is not a topic the workers consume")
    carried = _headers(record).get(ATTEMPT, "")
    attempt = int(carried) if carried.isdigit() and int(carried) >= 1 else 1
    headers = RecordHeaders(attempt=attempt, due_ms=to_epoch_ms(datetime.now(UTC))).encode()
    outbox.enqueue(conn, target, record.key, record.value or b"", headers)
    ref = f"{env.layout.dead_letter}:{body.partition}:{body.offset}"
    audit.record(
        conn,
        actor,
        "dead_letters.republish",
        "dead_letter",
        [ref],
        before=view.model_dump(mode="json"),
        after={"topic": target, "attempt": attempt},
    )
    log.info(
        "dead letter %s republished to topic=%s by %s request=%s",
        ref,
        target,
        actor.name,
        actor.request_id,
    )
    return Outcome.of(200, Republished(dead_letter=ref, topic=target, attempt=attempt))
