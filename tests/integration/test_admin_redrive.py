"""Dead letters and redrive through the admin API: the dry run's count is what the real
redrive then does, a schedule whose flag moved on is skipped, and the rate holds."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.admin import running_admin
from tests.support.pipeline import (
    add_flag,
    add_schedule,
    attempts,
    hold_flag_lock,
    running_dispatcher,
    running_worker,
    seconds_from_now,
    status_is,
    wait_until,
)

pytestmark = pytest.mark.integration


def _dead(db: Any, sids: list[int]) -> bool:
    return all(status_is(db, s, "dead") for s in sids)


def test_redrive_dry_run_count_equals_the_real_redrive(settings, db, dsn, tmp_path):
    for key in ("red.a", "red.b", "other"):
        add_flag(db, key)
    # Five schedules die for real: their flags are locked and they have no retries left.
    locks = [hold_flag_lock(dsn, k)[1] for k in ("red.a", "red.b", "other")]
    doomed = [
        add_schedule(db, key, {"enabled": True}, max_retries=0, at=seconds_from_now(-60 + i))
        for i, key in enumerate(("red.a", "red.a", "red.b", "red.b", "other"))
    ]
    with running_worker(settings), running_dispatcher(settings):
        wait_until(lambda: _dead(db, doomed), what="five dead schedules")
        for release in locks:
            release()
        # A newer change sets red.b's only field: its dead schedules have been overtaken.
        newer = add_schedule(db, "red.b", {"enabled": False})
        wait_until(lambda: status_is(db, newer, "applied"), what="the newer change applied")
        with running_admin(settings, tmp_path) as api, api.client("admin") as client:
            listed = client.get("/api/admin/dead-letters", params={"flag_prefix": "red."}).json()
            assert sorted(d["schedule_id"] for d in listed["items"]) == sorted(doomed[:4])
            assert {d["reason"] for d in listed["items"]} == {"exhausted"}
            selection = {"filter": {"flag_prefix": "red."}}
            dry = client.post("/api/admin/dead-letters/redrive", json=selection)
            assert dry.status_code == 200, dry.text
            assert (dry.json()["count"], dry.json()["would_skip"]) == (4, 2)
            assert db.execute("SELECT count(*) AS n FROM admin_redrives").fetchone()["n"] == 0
            real = client.post(
                "/api/admin/dead-letters/redrive", json=selection | {"dry_run": False}
            )
            assert real.status_code == 202, real.text
            location = real.headers["location"]
            job = wait_until(
                lambda: (j := client.get(location).json())["status"] == "done" and j,
                what="the redrive done",
            )
            wait_until(lambda: all(status_is(db, s, "applied") for s in doomed[:2]), what="applied")
    assert job["total"] == dry.json()["count"]
    assert (job["redriven"], job["skipped"]) == (2, 2)
    assert sorted(job["skipped_ids"]) == sorted(doomed[2:4])
    assert [a["outcome"] for a in attempts(db, doomed[0])] == ["dead", "applied"]
    assert status_is(db, doomed[4], "dead")  # outside the filter: untouched
    audit = db.execute("SELECT * FROM admin_audit").fetchall()
    assert [(a["action"], a["object_ids"]) for a in audit] == [
        ("dead_letters.redrive", [str(job["id"])])
    ]


def test_a_5000_schedule_redrive_keeps_to_its_rate(settings, db, tmp_path):
    add_flag(db, "bulk")
    # Dead rows as a worker leaves them (status dead, one dead attempt row each).
    db.execute(
        "WITH s AS (INSERT INTO flag_schedules (flag_key, updates, scheduled_at, status,"
        " retry_count, max_retries, finished_at, finished_attempt)"
        " SELECT 'bulk', '{\"enabled\": true}', now() - interval '1 hour', 'dead', 1, 0, now(), 1"
        " FROM generate_series(1, 5000) RETURNING id)"
        " INSERT INTO schedule_retry_attempts (schedule_id, attempt, started_at, finished_at,"
        " outcome, error_class, dlt_reason) SELECT id, 1, now(), now(), 'dead',"
        " 'lock_contention', 'exhausted' FROM s"
    )
    rate = 2500.0
    with running_admin(settings, tmp_path) as api, api.client("admin") as client:
        began = time.monotonic()
        started = client.post(
            "/api/admin/dead-letters/redrive",
            json={"filter": {"flag_key": "bulk"}, "dry_run": False, "rate_per_s": rate},
        )
        assert started.status_code == 202, started.text
        assert started.json()["total"] == 5000
        samples: list[tuple[float, int]] = []

        def done() -> bool:
            job = client.get(started.headers["location"]).json()
            samples.append((time.monotonic() - began, job["position"]))
            return bool(job["status"] == "done")

        wait_until(done, timeout_s=60, what="the redrive done", interval_s=0.2)
    elapsed = samples[-1][0]
    assert elapsed >= 5000 / rate * 0.9  # never faster than the rate
    for at, position in samples:  # and at no point ahead of it (one batch of slack)
        assert position <= rate * at + rate / 10 + 1
    n = db.execute("SELECT count(*) AS n FROM flag_schedules WHERE status = 'retrying'").fetchone()
    assert n["n"] == 5000
    sent = db.execute("SELECT count(*) AS n FROM admin_outbox").fetchone()["n"]
    assert sent == 5000
    wait_until(
        lambda: (
            db.execute("SELECT count(*) AS n FROM admin_outbox WHERE sent_at IS NULL").fetchone()[
                "n"
            ]
            == 0
        ),
        what="every wake-up published",
    )
