"""The outbox: an action whose process could not publish (Kafka unreachable, a real
fault) is published later by the admin server, exactly once."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.admin import running_admin
from tests.support.pipeline import (
    add_flag,
    add_schedule,
    read_topic,
    seconds_from_now,
    settings_env,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_a_cancel_that_could_not_be_published_is_sent_once_by_the_server(settings, db, tmp_path):
    add_flag(db, "late")
    sid = add_schedule(db, "late", {"enabled": True}, at=seconds_from_now(600))
    # The CLI commits the cancel, then finds no broker: nothing listens on port 1.
    env = settings_env(settings) | {"FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    done = subprocess.run(
        [sys.executable, "-m", "flagsched.cli", "schedules", "cancel", "late", str(sid)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "queued in the outbox" in done.stderr
    unsent = "SELECT count(*) AS n FROM admin_outbox WHERE sent_at IS NULL"
    assert db.execute(unsent).fetchone()["n"] == 1
    with running_admin(settings, tmp_path):
        wait_until(lambda: db.execute(unsent).fetchone()["n"] == 0, what="the outbox drained")
        events = read_topic(settings, settings.topic_layout().lifecycle, expect=1)
    assert [json.loads(e.value)["type"] for e in events] == ["cancelled"]
    other = add_schedule(db, "late", {"enabled": False}, at=seconds_from_now(600))
    with running_admin(settings, tmp_path) as api, api.client("operator") as client:
        # A restart sends nothing again: the drain goes in id order, so once a later
        # record is out, an earlier one would have been sent before it.
        assert client.post(f"/api/admin/flags/late/schedules/{other}/cancel").status_code == 200
        wait_until(lambda: db.execute(unsent).fetchone()["n"] == 0, what="drained again")
        again = read_topic(settings, settings.topic_layout().lifecycle, expect=2)
    assert [json.loads(e.value)["schedule_id"] for e in again] == [sid, other]
