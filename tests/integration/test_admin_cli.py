"""The CLI verbs call the service layer (no server): create, list, show, edit, preview,
cancel, retry, dead letters and redrive, as tables and as --json."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.support.pipeline import (
    add_flag,
    add_schedule,
    read_topic,
    seconds_from_now,
    settings_env,
)

pytestmark = pytest.mark.integration


def _cli(settings: Any, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "flagsched.cli", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode == 0) is ok, done.stderr
    return done


def test_schedule_verbs_round_trip(settings, db):
    add_flag(db, "cli")
    at = seconds_from_now(600).isoformat()
    made = json.loads(
        _cli(
            settings,
            "schedules",
            "create",
            "cli",
            "--updates",
            '{"enabled": true}',
            "--at",
            at,
            "--json",
        ).stdout
    )
    sid = made["schedule"]["id"]
    table = _cli(settings, "schedules", "list", "--flag", "cli").stdout
    assert table.splitlines()[0].split()[:3] == ["ID", "FLAG", "STATUS"]
    assert f"{sid}  " in table and "pending" in table
    edited = json.loads(
        _cli(
            settings, "schedules", "edit", "cli", str(sid), "--priority", "critical", "--json"
        ).stdout
    )
    assert edited["priority"] == "critical"
    shown = _cli(settings, "schedules", "show", "cli", str(sid)).stdout
    assert f"schedule {sid} of flag cli: pending" in shown and "Plan" in shown
    preview = json.loads(
        _cli(
            settings,
            "schedules",
            "preview",
            "--retry-policy",
            '{"max_retries": 2, "jitter": "none"}',
            "--json",
        ).stdout
    )
    assert [a["attempt"] for a in preview["attempts"]] == [2, 3]
    assert "cancelled" in _cli(settings, "schedules", "cancel", "cli", str(sid)).stdout
    [event] = read_topic(settings, settings.topic_layout().lifecycle, expect=1)
    assert json.loads(event.value)["type"] == "cancelled"  # drained by the CLI itself
    refused = _cli(settings, "schedules", "cancel", "cli", str(sid), ok=False)
    assert "cannot be cancelled" in refused.stderr
    bad = _cli(settings, "schedules", "create", "cli", "--updates", "{}", "--at", at, ok=False)
    assert "updates" in bad.stderr
    audit = db.execute("SELECT actor, action FROM admin_audit ORDER BY id").fetchall()
    assert [a["action"] for a in audit] == ["schedule.create", "schedule.edit", "schedule.cancel"]
    assert all(a["actor"].startswith("cli:") for a in audit)


def test_dead_letter_verbs_and_a_redrive(settings, db):
    add_flag(db, "gone")
    sid = add_schedule(db, "gone", {"enabled": True}, at=seconds_from_now(-5))
    db.execute(
        "UPDATE flag_schedules SET status = 'dead', retry_count = 1, finished_attempt = 1,"
        " finished_at = now() WHERE id = %s",
        (sid,),
    )
    db.execute(
        "INSERT INTO schedule_retry_attempts (schedule_id, attempt, started_at, finished_at,"
        " outcome, error_class, dlt_reason) VALUES (%s, 1, now(), now(), 'dead',"
        " 'flag_not_found', 'permanent')",
        (sid,),
    )
    listed = json.loads(_cli(settings, "dead-letters", "list", "--json").stdout)
    assert [(d["schedule_id"], d["reason"]) for d in listed["items"]] == [(sid, "permanent")]
    dry = _cli(settings, "dead-letters", "redrive", "--flag", "gone").stdout
    assert dry.startswith("would redrive 1 dead schedule(s)")
    real = json.loads(
        _cli(settings, "dead-letters", "redrive", "--flag", "gone", "--no-dry-run", "--json").stdout
    )
    assert (real["status"], real["redriven"]) == ("done", 1)
    assert "done, 1/1" in _cli(settings, "redrives", "show", str(real["id"])).stdout
    row = db.execute(
        "SELECT status, max_retries FROM flag_schedules WHERE id = %s", (sid,)
    ).fetchone()
    assert row["status"] == "retrying"
    [wake] = read_topic(settings, settings.topic_layout().due, expect=1)
    assert dict(wake.headers)["flagsched-attempt"] == b"2"
