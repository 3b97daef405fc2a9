"""Recording deliveries (the intake side of notification_deliveries, migration 0008).

Each (event, sink) is one row, inserted idempotently (a redelivered record inserts
nothing): ``pending`` until a digest takes it, ``suppressed`` when the same rule
already told the sink about the same kind of event for the same schedule within the
rule's dedup window, ``disabled`` when the sink's endpoint answered 410.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flagsched.notifier.config import EventKind, NotifyConfig, Sink
from flagsched.notifier.digest import Digest
from flagsched.notifier.notice import Notice
from flagsched.runtime.db.connect import DictConnection
from flagsched.schemas.events import Priority

log = logging.getLogger(__name__)

#: Sinks with incidents: a trigger stays open until a resolve closes it.
INCIDENT_SINKS = ("pagerduty", "opsgenie")


def sink_url(sink: Sink) -> str:
    """The URL a sink posts to (for Slack the URL is the secret)."""
    if sink.type == "slack":
        return sink.url.get_secret_value()
    return sink.url


def url_fingerprint(sink: Sink) -> str:
    """sha256 of the sink's URL: a 410 disables that URL, not the sink's name forever."""
    return hashlib.sha256(sink_url(sink).encode()).hexdigest()


@dataclass(frozen=True)
class Pending:
    """One delivery to record: the notice, the rule and sink it goes by, its record."""

    notice: Notice
    rule: str
    sink: str
    dedup_window_s: float
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


def priorities(conn: DictConnection, schedule_ids: Iterable[int]) -> dict[int, Priority]:
    """The priority of each schedule, for events that do not carry it (dead-letter
    records, and lifecycle events from workers before 2026-12-01)."""
    ids = sorted(set(schedule_ids))
    if not ids:
        return {}
    rows = conn.execute(
        "SELECT id, priority FROM flag_schedules WHERE id = ANY(%s)", (ids,)
    ).fetchall()
    return {int(r["id"]): Priority(r["priority"]) for r in rows}


def disabled_sinks(conn: DictConnection, config: NotifyConfig) -> set[str]:
    """Sinks whose current URL answered 410 Gone."""
    rows = conn.execute("SELECT sink, url_sha256 FROM notification_endpoints").fetchall()
    return {
        r["sink"]
        for r in rows
        if r["sink"] in config.sinks and url_fingerprint(config.sinks[r["sink"]]) == r["url_sha256"]
    }


_INSERT = """
INSERT INTO notification_deliveries
    (event_key, sink, rule, kind, subject, schedule_id, notice, status,
     topic, kafka_partition, kafka_offset)
SELECT %(key)s, %(sink)s, %(rule)s, %(kind)s, %(subject)s, %(schedule_id)s, %(notice)s,
       CASE WHEN %(disabled)s THEN 'disabled'
            WHEN EXISTS (
                SELECT 1 FROM notification_deliveries d
                 WHERE d.sink = %(sink)s AND d.rule = %(rule)s AND d.subject = %(subject)s
                   AND d.status NOT IN ('suppressed', 'dropped', 'disabled')
                   AND d.created_at > now() - make_interval(secs => %(window)s))
            THEN 'suppressed'
            ELSE 'pending' END,
       %(topic)s, %(partition)s, %(offset)s
ON CONFLICT (event_key, sink) DO NOTHING
RETURNING sink, status
"""


def record(
    conn: DictConnection, pending: list[Pending], disabled: set[str]
) -> list[tuple[str, str]]:
    """Insert the deliveries (in the caller's transaction); (sink, status) of each new
    row. A row already there (a redelivered record) is left as it is."""
    out: list[tuple[str, str]] = []
    with conn.cursor() as cur:
        for p in pending:
            cur.execute(
                _INSERT,
                {
                    "key": p.notice.key,
                    "sink": p.sink,
                    "rule": p.rule,
                    "kind": p.notice.kind.value,
                    "subject": p.notice.subject,
                    "schedule_id": p.notice.schedule_id,
                    "notice": p.notice.model_dump_json(),
                    "disabled": p.sink in disabled,
                    "window": p.dedup_window_s,
                    "topic": p.topic,
                    "partition": p.partition,
                    "offset": p.offset,
                },
            )
            row = cur.fetchone()
            if row is not None:
                out.append((str(row["sink"]), str(row["status"])))
    return out


def insert_message(conn: DictConnection, digest: Digest, sink: str) -> None:
    """Queue ``digest`` for ``sink`` (sent by the outbox)."""
    conn.execute(
        "INSERT INTO notification_messages (id, sink, rule, kind, action, dedup_key, notices,"
        " schedule_ids, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            digest.message_id,
            sink,
            digest.rule,
            digest.kind.value,
            digest.action,
            digest.dedup_key,
            json.dumps([n.model_dump(mode="json") for n in digest.notices]),
            digest.schedule_ids,
            digest.created_at,
        ),
    )


_STILL_OPEN = """
SELECT count(*) FILTER (WHERE s.status IS DISTINCT FROM 'applied') AS unapplied
  FROM notification_messages m
  CROSS JOIN LATERAL unnest(m.schedule_ids) AS sid
  LEFT JOIN flag_schedules s ON s.id = sid
 WHERE m.sink = %s AND m.dedup_key = %s AND m.action = 'trigger' AND m.resolved_at IS NULL
"""


def resolve_applied(
    conn: DictConnection, config: NotifyConfig, applied: list[Notice], now: Any
) -> list[str]:
    """Queue a resolve for each open incident whose schedules are now all applied (a
    manual retry or a redrive after it was opened); returns the dedup keys resolved."""
    by_id = {n.schedule_id: n for n in applied if n.schedule_id is not None}
    if not by_id:
        return []
    incident_sinks = [name for name, s in config.sinks.items() if s.type in INCIDENT_SINKS]
    rows = conn.execute(
        "SELECT DISTINCT sink, dedup_key, rule, kind FROM notification_messages"
        " WHERE action = 'trigger' AND resolved_at IS NULL AND schedule_ids && %s::bigint[]"
        " AND sink = ANY(%s)",
        (sorted(by_id), incident_sinks),
    ).fetchall()
    resolved = []
    for row in rows:
        left = conn.execute(_STILL_OPEN, (row["sink"], row["dedup_key"])).fetchone()
        if left is None or left["unapplied"]:
            continue
        opened = conn.execute(
            "UPDATE notification_messages SET resolved_at = %s WHERE sink = %s AND dedup_key = %s"
            " AND action = 'trigger' AND resolved_at IS NULL RETURNING schedule_ids",
            (now, row["sink"], row["dedup_key"]),
        ).fetchall()
        ids = {int(i) for r in opened for i in r["schedule_ids"]}
        notices = tuple(n for sid, n in by_id.items() if sid in ids)
        digest = Digest(
            uuid.uuid4(),
            row["rule"],
            EventKind(row["kind"]),
            "resolve",
            row["dedup_key"],
            notices,
            now,
        )
        insert_message(conn, digest, row["sink"])
        for notice in notices:
            conn.execute(
                "INSERT INTO notification_deliveries (event_key, sink, rule, kind, subject,"
                " schedule_id, notice, status, message_id) VALUES"
                " (%s, %s, %s, 'resolve', %s, %s, %s, 'queued', %s)"
                " ON CONFLICT (event_key, sink) DO NOTHING",
                (
                    f"{notice.key}:resolve",
                    row["sink"],
                    row["rule"],
                    f"resolve:{notice.schedule_id}",
                    notice.schedule_id,
                    notice.model_dump_json(),
                    digest.message_id,
                ),
            )
        log.info("incident %s on sink %s: resolve queued", row["dedup_key"], row["sink"])
        resolved.append(str(row["dedup_key"]))
    return resolved
