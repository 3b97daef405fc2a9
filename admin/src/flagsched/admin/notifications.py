"""``flagsched notify deliveries``: what the notifier sent, is retrying or dropped.

Reads ``notification_deliveries`` and ``notification_messages`` (migration 0008) like
any other client: the operator surface never imports the notifier. The same query
serves ``GET /api/admin/notifications`` (service/notifications.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

_SELECT = """
SELECT d.event_key, d.sink, d.rule, d.kind, d.schedule_id, d.status, d.attempts,
       d.response_code, d.next_attempt_at, d.created_at, d.updated_at,
       m.id AS message_id, m.dedup_key, m.last_error
  FROM notification_deliveries d
  LEFT JOIN notification_messages m ON m.id = d.message_id
"""


@dataclass(frozen=True)
class Delivery:
    """One (event, sink) row with its message's key and last error."""

    event_key: str
    sink: str
    rule: str
    kind: str
    schedule_id: int | None
    status: str
    attempts: int
    response_code: int | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    message_id: str | None
    dedup_key: str | None
    last_error: str | None


def select_deliveries(
    conn: Any,
    *,
    statuses: Sequence[str] = (),
    sink: str | None = None,
    rule: str | None = None,
    kind: str | None = None,
    schedule_id: int | None = None,
    updated_after: datetime | None = None,
    updated_before: datetime | None = None,
    after: tuple[datetime, str, str] | None = None,
    limit: int = 50,
) -> list[Delivery]:
    """Deliveries newest first (``updated_at``, then ``event_key`` and ``sink``, all
    descending: a total order, so ``after``, the key of the last row of a page, continues
    it); every argument given narrows the selection."""
    where: list[str] = []
    params: list[Any] = []
    for clause, value in (
        ("d.status = ANY(%s)", list(statuses) or None),
        ("d.sink = %s", sink),
        ("d.rule = %s", rule),
        ("d.kind = %s", kind),
        ("d.schedule_id = %s", schedule_id),
        ("d.updated_at >= %s", updated_after),
        ("d.updated_at < %s", updated_before),
    ):
        if value is not None:
            where.append(clause)
            params.append(value)
    if after is not None:
        where.append("(d.updated_at, d.event_key, d.sink) < (%s, %s, %s)")
        params += list(after)
    sql = (
        _SELECT
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + " ORDER BY d.updated_at DESC, d.event_key DESC, d.sink DESC LIMIT %s"
    )
    rows = conn.execute(sql, (*params, limit)).fetchall()
    return [
        Delivery(**{**row, "message_id": str(row["message_id"]) if row["message_id"] else None})
        for row in rows
    ]


def recent_deliveries(
    conn: Any, *, status: str | None = None, sink: str | None = None, limit: int = 50
) -> list[Delivery]:
    """The latest deliveries, newest first, optionally of one status or sink."""
    return select_deliveries(conn, statuses=[status] if status else [], sink=sink, limit=limit)


def render_deliveries(rows: list[Delivery], *, as_json: bool = False) -> str:
    """A table (or JSON lines) for the terminal."""
    if as_json:
        return "".join(json.dumps(asdict(r), default=str) + "\n" for r in rows)
    if not rows:
        return "no deliveries\n"
    lines = [f"{'updated':<20} {'sink':<14} {'status':<10} {'att':>3} {'code':>4}  event / error"]
    for r in rows:
        detail = r.event_key + (f"  ({r.last_error[:80]})" if r.last_error else "")
        code = "" if r.response_code is None else str(r.response_code)
        lines.append(
            f"{r.updated_at:%Y-%m-%d %H:%M:%S}  {r.sink[:14]:<14} {r.status:<10}"
            f" {r.attempts:>3} {code:>4}  {detail}"
        )
    return "\n".join(lines) + "\n"
