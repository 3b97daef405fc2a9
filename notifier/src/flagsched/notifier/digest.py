"""A digest: the notices one outgoing message carries, and the words every sink uses.

A single notice makes a message about that schedule; several (a burst) make one
message that counts them by reason and error class and lists the first few. The
dedup policy (which ``dedup_key`` an incident gets) is in docs/notifications.md.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from flagsched.notifier.config import EventKind, Links
from flagsched.notifier.notice import Notice
from flagsched.schemas.events import Priority

Action = Literal["trigger", "resolve"]

_VERB = {
    EventKind.DEAD_LETTERED: "dead-lettered",
    EventKind.RETRY_SCHEDULED: "scheduled for retry",
    EventKind.APPLIED_AFTER_RETRIES: "applied after retries",
    EventKind.BREAKER_OPENED: "breaker openings",
    EventKind.BREAKER_CLOSED: "breaker closings",
    EventKind.BACKLOG: "backlog checks over the threshold",
}


@dataclass(frozen=True)
class Digest:
    """One outgoing message: its stable id (the webhook-id), what it says and about what."""

    message_id: uuid.UUID
    rule: str
    kind: EventKind
    action: Action
    dedup_key: str
    notices: tuple[Notice, ...]
    created_at: datetime

    @property
    def single(self) -> Notice | None:
        """The notice, when the message is about one event."""
        return self.notices[0] if len(self.notices) == 1 else None

    @property
    def schedule_ids(self) -> list[int]:
        """Every schedule the message is about, in order, without repeats."""
        return list(dict.fromkeys(n.schedule_id for n in self.notices if n.schedule_id))

    @property
    def priority(self) -> Priority:
        """Critical if any schedule in it is critical."""
        crit = any(n.priority is Priority.CRITICAL for n in self.notices)
        return Priority.CRITICAL if crit else Priority.NORMAL

    def summary(self) -> str:
        """One line: the notice's headline, or the burst counted by cause."""
        if self.action == "resolve":
            return f"resolved: {self.dedup_key}"
        if (one := self.single) is not None:
            return one.headline
        causes = Counter(
            " ".join(p for p in (n.reason, n.error_class) if p) or "unknown" for n in self.notices
        )
        counted = ", ".join(f"{cause} {count}" for cause, count in causes.most_common(5))
        return f"{len(self.notices)} schedules {_VERB[self.kind]} (rule {self.rule}): {counted}"

    def severity(self) -> str:
        """PagerDuty's severity: critical schedules and an open breaker page as critical."""
        if self.kind is EventKind.BREAKER_OPENED or self.priority is Priority.CRITICAL:
            return "critical"
        return {
            EventKind.DEAD_LETTERED: "error",
            EventKind.RETRY_SCHEDULED: "warning",
            EventKind.BACKLOG: "warning",
        }.get(self.kind, "info")

    def links(self, links: Links) -> list[tuple[str, str]]:
        """(text, url) links to the admin UI and the trace of a single schedule."""
        one = self.single
        if one is None or one.schedule_id is None:
            return []
        values = {
            "schedule_id": str(one.schedule_id),
            "flag_key": one.flag_key or "",
            "trace_id": one.trace_id or "",
        }
        out = []
        if links.admin_url:
            out.append(("Schedule in flagsched admin", links.admin_url.format_map(values)))
        if links.trace_url and one.trace_id:
            out.append(("Trace of the attempt", links.trace_url.format_map(values)))
        return out


def trigger_key(rule: str, kind: EventKind, notices: list[Notice], episode: str | None) -> str:
    """The incident's dedup key (PagerDuty ``dedup_key``, Opsgenie ``alias``).

    One schedule outside a burst: ``flagsched:<schedule id>``, so a later apply
    resolves exactly that incident. A breaker change: ``flagsched:breaker``, resolved
    when it closes. A burst: ``flagsched:<rule>:<kind>:<episode>``, the same for every
    digest of the burst, so a burst is one incident. The retry backlog of a rule:
    ``flagsched:backlog:<rule>``, resolved when the backlog is back under its threshold.
    """
    if kind in (EventKind.BREAKER_OPENED, EventKind.BREAKER_CLOSED):
        return "flagsched:breaker"
    if kind is EventKind.BACKLOG:
        return f"flagsched:backlog:{rule}"
    if episode is None and len(notices) == 1 and notices[0].schedule_id is not None:
        return f"flagsched:{notices[0].schedule_id}"
    return f"flagsched:{rule}:{kind.value}:{episode or 'burst'}"
