"""What the UI's overview shows: schedules by status, the retry backlog by tier, the
workers' circuit breaker, applied and failed attempts per minute, the latest dead
letters. Read-only; every count honours the caller's flag-key prefixes."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kafka import TopicPartition
from pydantic import ValidationError

from flagsched.admin.service.access import Actor
from flagsched.admin.service.dead_letters import where_dead
from flagsched.admin.service.env import Env
from flagsched.admin.service.models import DeadLetter, Status
from flagsched.admin.service.schedules_read import like_prefix
from flagsched.runtime.clients import make_consumer
from flagsched.runtime.db.connect import DictConnection
from flagsched.schemas.events import BreakerState, ControlEvent

log = logging.getLogger(__name__)

#: Every status, retrying (the one an operator acts on) first.
STATUSES: tuple[Status, ...] = (
    "retrying",
    "pending",
    "dispatched",
    "applied",
    "dead",
    "cancelled",
    "superseded",
)
#: How long reading the control topic may take.
CONTROL_SCAN_S = 3.0
#: The control records read (the topic is compacted: about one per worker).
CONTROL_LAST = 500


def _prefix_clause(actor: Actor, column: str = "flag_key") -> tuple[str, list[Any]]:
    if not actor.prefixes:
        return "true", []
    clause = "(" + " OR ".join([f"{column} LIKE %s"] * len(actor.prefixes)) + ")"
    return clause, [like_prefix(p) for p in actor.prefixes]


def counts_by_status(conn: DictConnection, actor: Actor) -> dict[str, int]:
    """Schedules per status (every status present, zero if none)."""
    where, params = _prefix_clause(actor)
    rows = conn.execute(
        f"SELECT status, count(*) AS n FROM flag_schedules WHERE {where} GROUP BY status", params
    ).fetchall()
    found = {r["status"]: int(r["n"]) for r in rows}
    return {s: found.get(s, 0) for s in STATUSES}


@dataclass(frozen=True)
class Minute:
    """Attempts finished in one minute: applied, and failed (retried or dead-lettered)."""

    at: datetime
    applied: int
    failed: int


def per_minute(conn: DictConnection, actor: Actor, *, minutes: int = 60) -> list[Minute]:
    """Applied and failed attempts per minute over the last ``minutes`` (oldest first,
    every minute present)."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    since = now - timedelta(minutes=minutes - 1)
    where, params = _prefix_clause(actor, "s.flag_key")
    rows = conn.execute(
        "SELECT date_trunc('minute', a.finished_at) AS m,"
        " count(*) FILTER (WHERE a.outcome = 'applied') AS applied,"
        " count(*) FILTER (WHERE a.outcome IN ('retry', 'dead')) AS failed"
        " FROM schedule_retry_attempts a"
        + (" JOIN flag_schedules s ON s.id = a.schedule_id" if actor.prefixes else "")
        + f" WHERE a.finished_at >= %s AND {where} GROUP BY 1",
        (since, *params),
    ).fetchall()
    found = {r["m"].astimezone(UTC): (int(r["applied"]), int(r["failed"])) for r in rows}
    out = []
    for i in range(minutes):
        at = since + timedelta(minutes=i)
        applied, failed = found.get(at, (0, 0))
        out.append(Minute(at, applied, failed))
    return out


def latest_dead(conn: DictConnection, actor: Actor, *, limit: int = 10) -> list[DeadLetter]:
    """The most recently dead-lettered schedules, newest first."""
    where, params = where_dead(None, actor)
    rows = conn.execute(
        "SELECT s.id AS schedule_id, s.flag_key, s.finished_attempt AS attempt,"
        " a.error_class, a.error_message, a.dlt_reason AS reason,"
        " COALESCE(s.finished_at, a.finished_at) AS dead_at"
        " FROM flag_schedules s LEFT JOIN schedule_retry_attempts a"
        " ON a.schedule_id = s.id AND a.attempt = s.finished_attempt"
        f" WHERE {where} ORDER BY s.finished_at DESC NULLS LAST, s.id DESC LIMIT %s",
        (*params, limit),
    ).fetchall()
    return [DeadLetter.model_validate(r) for r in rows]


@dataclass(frozen=True)
class Breaker:
    """The workers' circuit breaker as the control topic says: ``open`` while any
    worker's latest record is open (or half open) and younger than the stale limit."""

    state: str  # closed | open | half_open | unknown
    workers: tuple[ControlEvent, ...]  # each worker's latest record, newest first
    error: str | None = None


def _control_records(env: Env) -> list[Any]:
    topic = env.layout.control
    consumer = make_consumer(env.settings, group_id=None, consumer_timeout_ms=500)
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return []
        consumer.assign(partitions)
        ends = consumer.end_offsets(partitions)
        begins = consumer.beginning_offsets(partitions)
        for tp in partitions:
            consumer.seek(tp, max(begins[tp], ends[tp] - CONTROL_LAST))
        found: list[Any] = []
        deadline = time.monotonic() + CONTROL_SCAN_S
        pending = {tp for tp in partitions if consumer.position(tp) < ends[tp]}
        while pending and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200).items():
                found.extend(records)
                if consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        return found
    finally:
        consumer.close()


def breaker(env: Env) -> Breaker:
    """The breaker state now; ``unknown`` (with the reason) if Kafka cannot be read."""
    try:
        records = _control_records(env)
    except Exception as exc:  # the overview must render while Kafka is down; it says so
        log.warning("control topic %s unreadable: %s", env.layout.control, type(exc).__name__)
        return Breaker("unknown", (), f"the control topic could not be read ({type(exc).__name__})")
    latest: dict[str, ControlEvent] = {}
    for r in records:
        try:
            event = ControlEvent.model_validate_json(r.value or b"")
        except ValidationError:
            continue  # a malformed record is the workers' concern (they ignore it too)
        latest[event.worker_id] = event
    stale = datetime.now(UTC) - timedelta(seconds=env.settings.breaker_stale_s)
    live = [e for e in latest.values() if e.at >= stale and e.state is not BreakerState.CLOSED]
    state = "closed"
    if any(e.state is BreakerState.OPEN for e in live):
        state = "open"
    elif live:
        state = "half_open"
    workers = tuple(sorted(latest.values(), key=lambda e: e.at, reverse=True))
    return Breaker(state, workers)


@dataclass(frozen=True)
class Overview:
    """Everything on the overview page but the breaker (read from Kafka on its own)."""

    counts: dict[str, int]
    backlog: Any  # flagsched.runtime.telemetry.backlog.BacklogSnapshot
    minutes: list[Minute]
    dead: list[DeadLetter]


def overview(conn: DictConnection, env: Env, actor: Actor) -> Overview:
    """The overview's database half."""
    from flagsched.runtime.telemetry.backlog import read_backlog

    return Overview(
        counts=counts_by_status(conn, actor),
        backlog=read_backlog(conn, env.settings.retry_tiers_s),
        minutes=per_minute(conn, actor),
        dead=latest_dead(conn, actor),
    )
