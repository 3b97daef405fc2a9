"""The audit trail: one row per mutating action, written in the action's transaction."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from flagsched.admin.service.access import Actor
from flagsched.admin.service.models import AuditEntry, AuditPage
from flagsched.admin.service.paging import decode_cursor, encode_cursor
from flagsched.runtime.db.connect import DictConnection


def record(
    conn: DictConnection,
    actor: Actor,
    action: str,
    object_type: str,
    object_ids: list[Any],
    *,
    before: Any = None,
    after: Any = None,
) -> None:
    """Append one audit row inside the caller's open transaction."""
    conn.execute(
        "INSERT INTO admin_audit (actor, role, action, object_type, object_ids, before, after,"
        " request_id, idempotency_key, source_address)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            actor.name,
            actor.role,
            action,
            object_type,
            [str(i) for i in object_ids],
            None if before is None else Jsonb(before),
            None if after is None else Jsonb(after),
            actor.request_id,
            actor.idempotency_key,
            actor.source_address,
        ),
    )


def list_audit(
    conn: DictConnection,
    *,
    object_id: str | None = None,
    action: str | None = None,
    actor: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> AuditPage:
    """Audit rows, newest first, optionally for one object, action or actor."""
    where: list[str] = ["true"]
    params: list[object] = []
    if object_id is not None:
        where.append("%s = ANY(object_ids)")
        params.append(object_id)
    if action is not None:
        where.append("action = %s")
        params.append(action)
    if actor is not None:
        where.append("actor = %s")
        params.append(actor)
    if cursor is not None:
        where.append("id < %s")
        params.append(int(decode_cursor(cursor, "cursor")[0]))
    rows = conn.execute(
        f"SELECT * FROM admin_audit WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT %s",
        (*params, limit + 1),
    ).fetchall()
    items = [AuditEntry.model_validate(r) for r in rows[:limit]]
    more = len(rows) > limit
    return AuditPage(items=items, next_cursor=encode_cursor([items[-1].id]) if more else None)
