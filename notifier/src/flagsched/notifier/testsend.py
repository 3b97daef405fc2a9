"""`flagsched notify test --sink NAME`: send one test event to a sink now, through the
same rendering, SSRF guard and transport as real notifications (not the outbox: the
operator sees the vendor's answer at once). Incident sinks get a resolve right after
the trigger, so a test pages no one for long."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from flagsched.notifier.config import EventKind, NotifyConfig
from flagsched.notifier.digest import Action, Digest
from flagsched.notifier.errors import NotifierError
from flagsched.notifier.notice import Notice
from flagsched.notifier.outbox import judge, render
from flagsched.notifier.sinks.base import Outcome
from flagsched.notifier.store import INCIDENT_SINKS
from flagsched.notifier.transport import Transport


def send_test(config: NotifyConfig, transport: Transport, sink_name: str) -> list[str]:
    """Lines describing what each request got back; NotifierError if not delivered."""
    if sink_name not in config.sinks:
        raise NotifierError(
            f"--sink {sink_name}: not in the rules file (sinks: {', '.join(sorted(config.sinks))})"
        )
    sink = config.sinks[sink_name]
    now = datetime.now(UTC)
    notice = Notice(
        key=f"test:{uuid.uuid4()}",
        kind=EventKind.DEAD_LETTERED,
        occurred_at=now,
        flag_key="flagsched.notify-test",
        reason="test",
        detail="a test notification from `flagsched notify test`",
    )
    actions: list[Action] = ["trigger", "resolve"] if sink.type in INCIDENT_SINKS else ["trigger"]
    key = f"flagsched:test:{uuid.uuid4().hex[:8]}"
    lines = []
    for action in actions:
        digest = Digest(
            uuid.uuid4(),
            "notify-test",
            notice.kind,
            action,
            key,
            (notice,),
            now,
        )
        response = transport.send(render(digest, sink_name, config, datetime.now(UTC)))
        verdict = judge(sink.type, response.status, response.headers, response.body)
        lines.append(
            f"{sink_name} ({sink.type}) {action}: HTTP {response.status} {verdict.outcome}"
        )
        if verdict.outcome is not Outcome.DELIVERED:
            raise NotifierError("; ".join([*lines, verdict.reason]))
    return lines
