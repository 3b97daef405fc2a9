"""The demo's data set: flags and a few hundred schedules due over the next seconds.

Most schedules are healthy; some hit flags whose rows a "maintenance job" holds
locked for a few seconds (transient lock contention, retried); a few name an
unknown flag or carry an invalid update (permanent, dead-lettered at once); one
flag stays locked for the whole run so its schedule exhausts its retries.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg


@dataclass
class DemoPlan:
    """What was seeded, for the lock holders and the summary."""

    run_id: str
    schedule_ids: list[int] = field(default_factory=list)
    briefly_locked: list[str] = field(default_factory=list)
    always_locked: str = ""
    first_due: datetime = field(default_factory=lambda: datetime.now(UTC))


def seed(conn: psycopg.Connection[dict[str, object]], run_id: str, schedules: int) -> DemoPlan:
    """Insert flags and schedules for one demo run; keys are prefixed by ``run_id``."""
    rng = random.Random(run_id)
    flags = [f"demo-{run_id}.flag-{i:02d}" for i in range(40)]
    plan = DemoPlan(run_id, briefly_locked=flags[:4], always_locked=flags[4])
    now = datetime.now(UTC)
    plan.first_due = now + timedelta(seconds=3)
    with conn.transaction():
        for key in flags:
            conn.execute("INSERT INTO feature_flags (key) VALUES (%s)", (key,))
        for i in range(schedules):
            # a burst at one instant (the "midnight" promotion), the rest spread out
            due = plan.first_due + timedelta(seconds=0 if i % 3 == 0 else rng.uniform(0, 20))
            key, updates, max_retries = rng.choice(flags[5:]), _healthy(rng), None
            roll = rng.random()
            if i < 12:
                key = plan.briefly_locked[i % 4]
            elif roll < 0.03:
                key = f"demo-{run_id}.unknown-{i}"
            elif roll < 0.06:
                updates = {"rollout_percentage": 150}
            elif roll < 0.08:
                updates = {"enabled": "yes"}
            if i == 12:
                key, max_retries = plan.always_locked, 2
            priority = "critical" if i % 25 == 0 else "normal"
            row = conn.execute(
                "INSERT INTO flag_schedules (flag_key, updates, scheduled_at, priority,"
                " max_retries) VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (key, json.dumps(updates), due, priority, max_retries),
            ).fetchone()
            assert row is not None
            plan.schedule_ids.append(int(str(row["id"])))
    return plan


def _healthy(rng: random.Random) -> dict[str, object]:
    choice = rng.random()
    if choice < 0.4:
        return {"enabled": rng.random() < 0.5}
    if choice < 0.8:
        return {"rollout_percentage": rng.randrange(0, 101)}
    return {"enabled": True, "config": {"variant": rng.choice("ABC")}}
