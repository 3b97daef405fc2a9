"""The ``backlog`` event: schedules waiting for a retry (status ``retrying`` in
flag_schedules), checked every ``FLAGSCHED_NOTIFY_BACKLOG_CHECK_S`` against each
backlog rule's ``backlog_over``.

Over the threshold, a notice is recorded for each of the rule's sinks (the dedup
window keeps it to one per window); back under it, the rule's open backlog incident
(``flagsched:backlog:<rule>``) is resolved. One notifier checks at a time (a
transaction-scoped try-lock): the others skip the turn.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from flagsched.notifier.config import EventKind, NotifyConfig, Rule
from flagsched.notifier.digest import Digest, trigger_key
from flagsched.notifier.notice import Notice
from flagsched.notifier.store import INCIDENT_SINKS, Pending, disabled_sinks, insert_message, record
from flagsched.runtime.db.connect import DictConnection

log = logging.getLogger(__name__)

_LOCK = "flagsched.notify:backlog"


def backlog_rules(config: NotifyConfig) -> list[Rule]:
    """The rules that watch the backlog."""
    return [r for r in config.rules if EventKind.BACKLOG in r.events]


def check_backlog(conn: DictConnection, config: NotifyConfig, now: datetime) -> int | None:
    """Count the backlog and record or resolve; the count, or None if another notifier
    holds the check."""
    rules = backlog_rules(config)
    if not rules:
        return None
    with conn.transaction():
        got = conn.execute(
            "SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0)) AS ok", (_LOCK,)
        ).fetchone()
        if got is None or not got["ok"]:
            return None
        row = conn.execute(
            "SELECT count(*) AS n FROM flag_schedules WHERE status = 'retrying'"
        ).fetchone()
        count = int(row["n"]) if row else 0
        disabled = disabled_sinks(conn, config)
        for rule in rules:
            threshold = rule.backlog_over or 0
            if count > threshold:
                # One event per dedup window: later checks in the window insert nothing.
                bucket = int(now.timestamp() // max(1.0, rule.dedup_window_s))
                notice = Notice(
                    key=f"backlog:{rule.name}:{bucket}",
                    kind=EventKind.BACKLOG,
                    occurred_at=now,
                    detail=f"{count} schedules waiting for a retry (threshold {threshold})",
                )
                pending = [Pending(notice, rule.name, s, rule.dedup_window_s) for s in rule.sinks]
                record(conn, pending, disabled)
            else:
                _resolve(conn, config, rule, now)
    return count


def _resolve(conn: DictConnection, config: NotifyConfig, rule: Rule, now: datetime) -> None:
    key = trigger_key(rule.name, EventKind.BACKLOG, [], None)
    sinks = [s for s in rule.sinks if config.sinks[s].type in INCIDENT_SINKS]
    opened = conn.execute(
        "UPDATE notification_messages SET resolved_at = %s WHERE dedup_key = %s"
        " AND action = 'trigger' AND resolved_at IS NULL AND sink = ANY(%s)"
        " RETURNING sink, notices",
        (now, key, sinks),
    ).fetchall()
    for sink in sorted({r["sink"] for r in opened}):
        notices = tuple(
            Notice.model_validate(n) for r in opened if r["sink"] == sink for n in r["notices"]
        )
        digest = Digest(uuid.uuid4(), rule.name, EventKind.BACKLOG, "resolve", key, notices, now)
        insert_message(conn, digest, sink)
        log.info("backlog of rule %s under its threshold: resolve queued for %s", rule.name, sink)
