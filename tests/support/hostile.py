"""Helpers for the hostile-input tests: forged records, rows from before migration 0005,
and the checks that a bad input harmed only itself."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from psycopg import sql

from flagsched.runtime.settings import Settings
from flagsched.schemas.events import BreakerState
from flagsched.schemas.headers import RecordHeaders
from tests.support.pipeline import add_flag, add_schedule, attempts, schedule


def forge(
    settings: Settings,
    topic: str,
    records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]],
    *,
    timestamp_ms: int | None = None,
) -> None:
    """Write records (key, value, headers) straight to ``topic``, as an intruder would."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        for key, value, headers in records:
            producer.send(topic, key=key, value=value, headers=headers, timestamp_ms=timestamp_ms)
        producer.flush()
    finally:
        producer.close()


def due_record(
    schedule_id: int, flag_key: str, at: datetime, *, attempt: int = 1, due_ms: int | None = None
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """A schedule-due record as the dispatcher would publish it, any field forgeable
    (built as JSON, so that values the model refuses can be written)."""
    value = {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "schedule_id": schedule_id,
        "flag_key": flag_key,
        "scheduled_at": at.isoformat(),
        "priority": "normal",
        "dispatched_at": at.isoformat(),
    }
    due = int(at.timestamp() * 1000) if due_ms is None else due_ms
    headers = RecordHeaders(attempt=attempt, due_ms=due).encode()
    return flag_key.encode(), json.dumps(value).encode(), headers


def healthy(db: Any, n: int, at: datetime, prefix: str = "h") -> list[int]:
    """``n`` flags and one schedule each, due at ``at``."""
    ids = []
    for i in range(n):
        add_flag(db, f"{prefix}{i}")
        ids.append(add_schedule(db, f"{prefix}{i}", {"enabled": True}, at=at))
    return ids


def applied_on_time(db: Any, ids: list[int], *, max_late_ms: float = 2000) -> bool:
    """Every schedule of ``ids`` applied at its first attempt, at most ``max_late_ms`` late."""
    for sid in ids:
        rows = attempts(db, sid)
        if schedule(db, sid)["status"] != "applied" or [r["outcome"] for r in rows] != ["applied"]:
            return False
        assert rows[0]["lateness_ms"] < max_late_ms, (sid, rows[0]["lateness_ms"])
    return True


@contextmanager
def as_before_0005(db: psycopg.Connection[Any], constraint: str) -> Iterator[None]:
    """Run the block's writes without one of migration 0005's CHECKs, then put the
    CHECK back NOT VALID, as the migration left it: the rows written meanwhile are
    exactly the rows an older version could have left in the table."""
    row = db.execute(
        "SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint WHERE conname = %s",
        (constraint,),
    ).fetchone()
    assert row is not None, constraint
    name = sql.Identifier(constraint)
    db.execute(sql.SQL("ALTER TABLE flag_schedules DROP CONSTRAINT {}").format(name))
    try:
        yield
    finally:
        definition = str(row["def"]).removesuffix(" NOT VALID")
        db.execute(
            sql.SQL("ALTER TABLE flag_schedules ADD CONSTRAINT {} {} NOT VALID").format(
                name, sql.SQL(definition)
            )
        )


def control_events(settings: Settings) -> list[dict[str, Any]]:
    """Every record of the control topic, decoded as JSON where it is JSON."""
    layout = settings.topic_layout()
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False
    )
    tp = TopicPartition(layout.control, 0)
    try:
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]
        out: list[dict[str, Any]] = []
        while consumer.position(tp) < end:
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    try:
                        out.append(json.loads(rec.value))
                    except (ValueError, TypeError):
                        out.append({})
        return out
    finally:
        consumer.close()


class BreakerWatch:
    """An ``on_breaker`` hook that remembers every state a worker's breaker took."""

    def __init__(self) -> None:
        self.states: list[BreakerState] = []

    def __call__(self, state: BreakerState) -> None:
        self.states.append(state)

    @property
    def opened(self) -> bool:
        """Whether the breaker ever left CLOSED."""
        return any(s is not BreakerState.CLOSED for s in self.states)


def no_open_published(settings: Settings) -> bool:
    """No worker announced OPEN on the control topic."""
    return not [e for e in control_events(settings) if e.get("state") == "open"]
