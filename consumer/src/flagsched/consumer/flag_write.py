"""The one statement that changes flags: each flag's new state and its change-log entries.

Both paths that apply schedules use it: a poll folded set-based (consumer/coalesce.py)
and one schedule at a time (consumer/attempt.py), so the columns a change writes and
the change-log row it leaves are the same whichever path applied it. The caller holds
the flag rows locked and passes whole rows: the state columns (``STATE``), ``version``
and the per-field ordering columns (consumer/field_order.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg

from flagsched.schemas.field_order import FIELDS

#: The flag columns a schedule may change, as they appear in the change log.
STATE = FIELDS

Row = dict[str, Any]
#: One change-log entry: (flag key, schedule id, attempt, new version, before, after),
#: before and after being JSON objects of the ``STATE`` columns.
LogEntry = tuple[str, int, int, int, str, str]

_CHECK_TABLE = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS flagsched_flag_check"
    " (LIKE feature_flags INCLUDING CONSTRAINTS INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)

_CHECK = """
INSERT INTO flagsched_flag_check (key, enabled, rollout_percentage, config)
SELECT key, enabled, rollout, config::jsonb
  FROM unnest(%(key)b::text[], %(enabled)b::boolean[], %(rollout)b::integer[],
              %(config)b::text[]) AS u(key, enabled, rollout, config)
"""

#: Every flag's final state and all change-log entries, in one statement.
WRITE_FLAGS = """
WITH u AS (
    SELECT * FROM unnest(%(key)b::text[], %(enabled)b::boolean[], %(rollout)b::integer[],
                         %(config)b::text[], %(version)b::bigint[], %(stamps)b::text[],
                         %(sid)b::bigint[], %(sat)b::timestamptz[])
        AS u(key, enabled, rollout, config, version, stamps, sid, sat)
), f AS (
    UPDATE feature_flags f
       SET enabled = u.enabled, rollout_percentage = u.rollout, config = u.config::jsonb,
           version = u.version, field_stamps = u.stamps::jsonb,
           last_schedule_id = u.sid, last_scheduled_at = u.sat,
           updated_at = now()
      FROM u WHERE f.key = u.key
)
INSERT INTO flag_change_log (flag_key, schedule_id, attempt, version, before, after)
SELECT key, sid, n, version, before::jsonb, after::jsonb
  FROM unnest(%(l_key)b::text[], %(l_sid)b::bigint[], %(l_n)b::integer[],
              %(l_version)b::bigint[], %(l_before)b::text[], %(l_after)b::text[])
    AS l(key, sid, n, version, before, after)
"""


def state_json(flag: Row) -> str:
    """The ``STATE`` columns of a flag row as the change log records them."""
    return json.dumps({k: flag[k] for k in STATE})


def write_flags(
    conn: psycopg.Connection[Any],
    finals: Sequence[Row],
    log: Sequence[LogEntry],
    *,
    between: Sequence[Row] = (),
) -> None:
    """Write each flag's final state (one row per flag) and the change-log entries.

    ``between`` are states a flag passed through inside this write (several changes
    folded into one): they are first checked against the flag table's own constraints,
    in a temporary ``LIKE feature_flags INCLUDING CONSTRAINTS`` table, so a change that
    would have violated one is not hidden by a later change. Raises psycopg's error
    (a constraint, a value out of range) with nothing written.
    """
    if not finals:
        return
    if between:
        conn.execute(_CHECK_TABLE)
        conn.execute(_CHECK, _columns(between))
    conn.execute(
        WRITE_FLAGS,
        {
            **_columns(finals),
            "version": [f["version"] for f in finals],
            "stamps": [json.dumps(f["field_stamps"]) for f in finals],
            "sid": [f["last_schedule_id"] for f in finals],
            "sat": [f["last_scheduled_at"] for f in finals],
            "l_key": [entry[0] for entry in log],
            "l_sid": [entry[1] for entry in log],
            "l_n": [entry[2] for entry in log],
            "l_version": [entry[3] for entry in log],
            "l_before": [entry[4] for entry in log],
            "l_after": [entry[5] for entry in log],
        },
    )


def _columns(states: Sequence[Row]) -> dict[str, list[Any]]:
    return {
        "key": [s["key"] for s in states],
        "enabled": [s["enabled"] for s in states],
        "rollout": [s["rollout_percentage"] for s in states],
        "config": [json.dumps(s["config"]) for s in states],
    }
