"""Rows for the admin UI's tests and screenshots, written as the worker leaves them."""

from __future__ import annotations

from typing import Any

import psycopg


def add_dead(
    conn: psycopg.Connection[Any],
    flag_key: str,
    n: int,
    *,
    error_class: str = "lock_contention",
    message: str = "canceling statement due to lock timeout",
) -> list[int]:
    """``n`` dead schedules of ``flag_key`` (one dead attempt each, exhausted); their ids."""
    rows = conn.execute(
        "WITH s AS (INSERT INTO flag_schedules (flag_key, updates, scheduled_at, status,"
        " retry_count, max_retries, finished_at, finished_attempt, last_error, last_error_class)"
        " SELECT %(key)s, '{\"enabled\": true}', now() - interval '1 hour', 'dead', 0, 0, now(),"
        " 1, %(message)s, %(cls)s FROM generate_series(1, %(n)s) RETURNING id)"
        " INSERT INTO schedule_retry_attempts (schedule_id, attempt, started_at, finished_at,"
        " outcome, error_class, error_message, dlt_reason)"
        " SELECT id, 1, now(), now(), 'dead', %(cls)s, %(message)s, 'exhausted' FROM s"
        " RETURNING schedule_id",
        {"key": flag_key, "n": n, "cls": error_class, "message": message},
    ).fetchall()
    return sorted(int(r["schedule_id"] if isinstance(r, dict) else r[0]) for r in rows)
