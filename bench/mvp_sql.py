"""The MVP design's apply, statement by statement: one home for the baselines' flag update.

The MVP rebuild (bench/mvp_baseline.py) and the procrastinate task
(bench/procrastinate_app.py) apply a schedule the same way, the seed's way: lock
the flag, update the fields the schedule names, write the change log, mark the
schedule applied. They are baselines, not flagsched: flagsched's own flag write
is ``flagsched.consumer.flag_write`` (bench/ceilings.py measures that one).
"""

from __future__ import annotations

import json
from typing import Any

from psycopg import sql

LOCK_FLAG = (
    "SELECT enabled, rollout_percentage, config FROM feature_flags WHERE key = %s FOR UPDATE"
)

LOG_CHANGE = (
    "INSERT INTO flag_change_log (flag_key, schedule_id, attempt, version, before, after)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
)

MARK_APPLIED = (
    "UPDATE flag_schedules SET status = 'applied', finished_at = now(), updated_at = now()"
    " WHERE id = %s"
)


def update_flag(key: str, updates: dict[str, Any]) -> tuple[sql.Composed, dict[str, Any]]:
    """The UPDATE setting ``updates`` on flag ``key`` (returning its new state and version),
    with its parameters."""
    sets = [sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in updates]
    query = sql.SQL(
        "UPDATE feature_flags SET {}, version = version + 1, updated_at = now()"
        " WHERE key = %(key)s RETURNING enabled, rollout_percentage, config, version"
    ).format(sql.SQL(", ").join(sets))
    params = {k: json.dumps(v) if k == "config" else v for k, v in updates.items()}
    return query, {**params, "key": key}
