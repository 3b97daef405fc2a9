"""Dead letters, from the database: dead schedules with their last attempt."""

from __future__ import annotations

from typing import Any

from flagsched.admin.service.access import Actor
from flagsched.admin.service.models import DeadLetter, DeadLetterFilter, DeadLetterPage
from flagsched.admin.service.paging import decode_cursor, encode_cursor
from flagsched.admin.service.schedules_read import like_prefix
from flagsched.runtime.db.connect import DictConnection

_SELECT = """
SELECT s.id AS schedule_id, s.flag_key, s.finished_attempt AS attempt,
       a.error_class, a.error_message, a.dlt_reason AS reason,
       COALESCE(s.finished_at, a.finished_at) AS dead_at
  FROM flag_schedules s
  LEFT JOIN schedule_retry_attempts a ON a.schedule_id = s.id AND a.attempt = s.finished_attempt
"""


def where_dead(f: DeadLetterFilter | None, actor: Actor) -> tuple[str, list[Any]]:
    """The WHERE clause (over ``s`` and ``a`` of :data:`_SELECT`) selecting dead letters."""
    f = f or DeadLetterFilter()
    where, params = ["s.status = 'dead'"], []
    for clause, value in (
        ("s.flag_key = %s", f.flag_key),
        ("s.flag_key LIKE %s", like_prefix(f.flag_prefix) if f.flag_prefix else None),
        ("a.error_class = %s", f.error_class),
        ("a.dlt_reason = %s", f.reason),
        ("s.finished_at >= %s", f.dead_after),
        ("s.finished_at < %s", f.dead_before),
    ):
        if value is not None:
            where.append(clause)
            params.append(value)
    if actor.prefixes:
        where.append("(" + " OR ".join(["s.flag_key LIKE %s"] * len(actor.prefixes)) + ")")
        params += [like_prefix(p) for p in actor.prefixes]
    return " AND ".join(where), params


def select_dead(
    conn: DictConnection,
    actor: Actor,
    f: DeadLetterFilter | None,
    *,
    ids: list[int] | None = None,
    limit: int,
    after: int | None = None,
) -> list[DeadLetter]:
    """Dead letters in id order (``ids``: only those), at most ``limit``."""
    where, params = where_dead(f, actor)
    if ids is not None:
        where += " AND s.id = ANY(%s)"
        params.append(ids)
    if after is not None:
        where += " AND s.id > %s"
        params.append(after)
    rows = conn.execute(
        f"{_SELECT} WHERE {where} ORDER BY s.id LIMIT %s", (*params, limit)
    ).fetchall()
    return [DeadLetter.model_validate(r) for r in rows]


def list_dead_letters(
    conn: DictConnection,
    actor: Actor,
    f: DeadLetterFilter,
    *,
    limit: int = 50,
    cursor: str | None = None,
) -> DeadLetterPage:
    """One page of dead letters, oldest schedule id first."""
    after = int(decode_cursor(cursor, "cursor")[0]) if cursor else None
    rows = select_dead(conn, actor, f, limit=limit + 1, after=after)
    items = rows[:limit]
    more = len(rows) > limit
    return DeadLetterPage(
        items=items, next_cursor=encode_cursor([items[-1].schedule_id]) if more else None
    )
