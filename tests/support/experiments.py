"""The experiment set-up the experiment tests share: two arms that differ in their
retry budget, and a real run in which a held row lock decides between them."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.support.pipeline import (
    add_flag,
    add_schedule,
    running_dispatcher,
    running_worker,
    wait_until,
)

#: ``short`` dead-letters at the first failure; ``budget`` retries for up to 120 s.
ARMS = [
    {"name": "short", "weight": 1, "policy": {"max_retries": 0}},
    {"name": "budget", "weight": 2, "policy": {"max_retries": 100, "max_retry_duration_s": 120}},
]


def held_lock_run(settings: Any, db: Any, dsn: str, prefix: str, n: int) -> list[int]:
    """``n`` schedules on flags ``<prefix>.<i>`` fail on a row lock held for about 3 s,
    then finish with a real worker and dispatcher (under ``ARMS``, the arm that gives
    up at the first failure is dead-lettered). Returns the schedule ids."""
    keys = [f"{prefix}.{i}" for i in range(n)]
    for key in keys:
        add_flag(db, key)
    holder = psycopg.connect(dsn)
    holder.execute("SELECT 1 FROM feature_flags WHERE key = ANY(%s) FOR UPDATE", (keys,))
    sids = [add_schedule(db, key, {"enabled": True}) for key in keys]
    try:
        with running_worker(settings), running_dispatcher(settings):
            wait_until(
                lambda: (
                    db.execute(
                        "SELECT count(*) AS n FROM flag_schedules WHERE first_failed_at IS NOT NULL"
                        " AND first_failed_at < now() - interval '3 seconds'"
                    ).fetchone()["n"]
                    == n
                ),
                what="every schedule failed on the held lock 3 s ago",
            )
            holder.rollback()
            wait_until(
                lambda: db.execute(
                    "SELECT bool_and(status IN ('applied', 'dead')) AS ok FROM flag_schedules"
                ).fetchone()["ok"],
                what="every schedule finished",
            )
    finally:
        holder.close()
    return sids
