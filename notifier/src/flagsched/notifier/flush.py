"""Collapsing pending deliveries into digests (one message per sink, rule and kind).

Alertmanager's grouping: a group's first digest goes out ``group_wait_s`` after its
oldest pending event, the next no sooner than ``group_interval_s`` after the last, and
never more than ``rate_limit_per_min`` messages a minute per (sink, rule); held events
wait for the next digest, so a burst costs a few messages and loses nothing. Digests
within ``dedup_window_s`` of the group's previous one are one episode and share one
incident dedup key (digest.trigger_key). Several notifiers may flush at once: a
transaction-scoped advisory lock per group serialises them.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from flagsched.notifier.config import EventKind, NotifyConfig
from flagsched.notifier.digest import Action, Digest, trigger_key
from flagsched.notifier.notice import Notice
from flagsched.notifier.store import INCIDENT_SINKS, insert_message
from flagsched.runtime.db.connect import DictConnection

log = logging.getLogger(__name__)

#: Most events one digest carries; a larger backlog goes out in several.
MAX_DIGEST = 5000

_GROUPS = """
SELECT sink, rule, kind, min(created_at) AS oldest FROM notification_deliveries
 WHERE status = 'pending' GROUP BY sink, rule, kind ORDER BY oldest
"""
#: Events about schedules applied since: nothing left to tell (nor to page about).
_OVERTAKEN = """
UPDATE notification_deliveries d SET status = 'dropped', updated_at = now()
  FROM flag_schedules s
 WHERE d.status = 'pending' AND d.sink = %s AND d.rule = %s AND d.kind = %s
   AND d.kind IN ('dead_lettered', 'retry_scheduled')
   AND s.id = d.schedule_id AND s.status = 'applied'
"""


def flush_due(conn: DictConnection, config: NotifyConfig, now: datetime) -> list[Digest]:
    """Turn every group that is due into a queued message; returns the digests made."""
    made = []
    for group in conn.execute(_GROUPS).fetchall():
        sink, rule_name, kind = group["sink"], group["rule"], EventKind(group["kind"])
        if sink not in config.sinks:
            continue  # the rules file no longer has it; the rows wait for it to come back
        try:
            rule = config.rule(rule_name)
        except KeyError:
            rule = None
        wait_s = rule.group_wait_s if rule else 0.0
        if group["oldest"] > now - timedelta(seconds=wait_s):
            continue
        with conn.transaction():
            digest = _flush_group(conn, config, sink, rule_name, kind, now)
        if digest is not None:
            made.append(digest)
    return made


def _flush_group(
    conn: DictConnection,
    config: NotifyConfig,
    sink: str,
    rule_name: str,
    kind: EventKind,
    now: datetime,
) -> Digest | None:
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
        (f"flagsched.notify:{sink}:{rule_name}:{kind.value}",),
    )
    try:
        rule = config.rule(rule_name)
        interval_s, window_s, limit = (
            rule.group_interval_s,
            rule.dedup_window_s,
            rule.rate_limit_per_min,
        )
    except KeyError:  # a rule removed from the file: its held events still go out
        interval_s, window_s, limit = 0.0, 0.0, 60
    group = conn.execute(
        "SELECT last_flush_at, episode, episode_until FROM notification_groups"
        " WHERE sink = %s AND rule = %s AND kind = %s",
        (sink, rule_name, kind.value),
    ).fetchone()
    if group is not None and group["last_flush_at"] > now - timedelta(seconds=interval_s):
        return None
    recent = conn.execute(
        "SELECT count(*) AS n FROM notification_messages WHERE sink = %s AND rule = %s"
        " AND action = 'trigger' AND created_at > %s",
        (sink, rule_name, now - timedelta(minutes=1)),
    ).fetchone()
    if recent is not None and recent["n"] >= limit:
        return None
    conn.execute(_OVERTAKEN, (sink, rule_name, kind.value))
    rows = conn.execute(
        "SELECT event_key, notice FROM notification_deliveries WHERE status = 'pending'"
        " AND sink = %s AND rule = %s AND kind = %s ORDER BY created_at, event_key LIMIT %s"
        " FOR UPDATE SKIP LOCKED",
        (sink, rule_name, kind.value, MAX_DIGEST),
    ).fetchall()
    if not rows:
        return None
    notices = [Notice.model_validate(r["notice"]) for r in rows]
    ongoing = group is not None and group["episode_until"] > now
    episode = group["episode"] if ongoing and group else now.strftime("%Y%m%dT%H%M%SZ")
    incident = config.sinks[sink].type in INCIDENT_SINKS
    action: Action = "resolve" if incident and kind is EventKind.BREAKER_CLOSED else "trigger"
    digest = Digest(
        message_id=uuid.uuid4(),
        rule=rule_name,
        kind=kind,
        action=action,
        dedup_key=trigger_key(
            rule_name, kind, notices, episode if ongoing or len(notices) > 1 else None
        ),
        notices=tuple(notices),
        created_at=now,
    )
    insert_message(conn, digest, sink)
    conn.execute(
        "UPDATE notification_deliveries SET status = 'queued', message_id = %s,"
        " next_attempt_at = %s, updated_at = now() WHERE event_key = ANY(%s) AND sink = %s",
        (digest.message_id, now, [r["event_key"] for r in rows], sink),
    )
    conn.execute(
        "INSERT INTO notification_groups (sink, rule, kind, last_flush_at, episode, episode_until)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (sink, rule, kind) DO UPDATE SET"
        " last_flush_at = EXCLUDED.last_flush_at, episode = EXCLUDED.episode,"
        " episode_until = EXCLUDED.episode_until",
        (sink, rule_name, kind.value, now, episode, now + timedelta(seconds=window_s)),
    )
    log.info(
        "digest %s for sink=%s rule=%s kind=%s: %d event(s), dedup_key=%s",
        digest.message_id,
        sink,
        rule_name,
        kind.value,
        len(notices),
        digest.dedup_key,
    )
    return digest
