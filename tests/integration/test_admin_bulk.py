"""Bulk actions through the admin API: the dry run's count is what the job then does
(all matching, in batches, audited), who may start one, bad filters answered with a
problem naming the field, the cap, and a job left running is resumed by a server."""

from __future__ import annotations

import pytest

from tests.support.admin import running_admin
from tests.support.pipeline import add_flag, add_schedule, seconds_from_now, wait_until
from tests.support.ui_data import add_dead

pytestmark = pytest.mark.integration

_URL = "/api/admin/schedules/bulk-actions"


def test_a_bulk_cancel_does_what_its_dry_run_counted(settings, db, tmp_path):
    add_flag(db, "shop.a")
    add_flag(db, "other")
    pending = [
        add_schedule(db, "shop.a", {"enabled": True}, at=seconds_from_now(900)) for _ in range(130)
    ]
    outside = add_schedule(db, "other", {"enabled": True}, at=seconds_from_now(900))
    dead = add_dead(db, "shop.a", 3)  # matches the prefix, but cancel does not apply to dead
    body = {"action": "cancel", "filter": {"flag_prefix": "shop."}}
    with running_admin(settings, tmp_path, admin_bulk_batch=25) as api, api.client("operator") as c:
        plan = c.post(_URL, json=body)
        assert plan.status_code == 200, plan.text
        assert plan.json()["count"] == 130 and len(plan.json()["sample"]) == 10
        started = c.post(_URL, json=body | {"dry_run": False}, headers={"Idempotency-Key": "b1"})
        assert started.status_code == 202, started.text
        job = started.json()
        assert (
            job["total"] == 130
            and started.headers["location"] == f"/api/admin/bulk-actions/{job['id']}"
        )
        replay = c.post(_URL, json=body | {"dry_run": False}, headers={"Idempotency-Key": "b1"})
        assert replay.json()["id"] == job["id"]  # the same job, not a second one

        with api.client("viewer") as viewer:

            def finished():
                got = viewer.get(f"/api/admin/bulk-actions/{job['id']}").json()
                return got if got["status"] == "done" else None

            final = wait_until(finished, timeout_s=60, what="the bulk cancel")
    assert (final["position"], final["done"], final["skipped"]) == (130, 130, 0)
    rows = db.execute("SELECT id, status FROM flag_schedules").fetchall()
    statuses = {r["id"]: r["status"] for r in rows}
    assert {statuses[i] for i in pending} == {"cancelled"}
    assert statuses[outside] == "pending" and {statuses[i] for i in dead} == {"dead"}
    audit = db.execute("SELECT action, count(*) AS n FROM admin_audit GROUP BY 1").fetchall()
    assert {a["action"]: a["n"] for a in audit} == {
        "schedules.bulk_cancel": 1,
        "schedule.cancel": 130,
    }
    # one cancelled event per schedule goes out through the outbox, as for one click
    wait_until(
        lambda: (
            db.execute("SELECT count(*) AS n FROM admin_outbox WHERE sent_at IS NULL").fetchone()[
                "n"
            ]
            == 0
        ),
        what="the outbox drained",
    )


def test_who_may_start_a_bulk_action(settings, db, tmp_path):
    body = {"action": "retry", "filter": {"status": ["dead"]}}
    with running_admin(settings, tmp_path) as api:
        with api.client(None) as anonymous:
            assert anonymous.post(_URL, json=body).status_code == 401
        with api.client("viewer") as viewer:
            refused = viewer.post(_URL, json=body)
            assert refused.status_code == 403
            assert refused.headers["content-type"] == "application/problem+json"
        with api.client("operator") as operator:
            assert operator.post(_URL, json=body).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "cancel", "filter": {}}, "filter"),
        ({"action": "cancel", "filter": {"status": ["bogus"]}}, "filter.status.0"),
        ({"action": "cancel", "filter": {"due_after": "2030-01-01T00:00:00"}}, "filter.due_after"),
        ({"action": "cancel", "filter": {"flag_prefix": "a b"}}, "filter.flag_prefix"),
        ({"action": "cancel", "filter": {"colour": "red"}}, "filter.colour"),
        ({"action": "delete", "filter": {"status": ["pending"]}}, "action"),
        ({"filter": {"status": ["pending"]}}, "action"),
    ],
)
def test_a_bad_request_is_a_problem_naming_the_field(settings, tmp_path, body, field):
    with running_admin(settings, tmp_path) as api, api.client("admin") as client:
        got = client.post(_URL, json=body)
    assert got.status_code == 422, got.text
    assert got.headers["content-type"] == "application/problem+json"
    problem = got.json()
    assert problem["type"] == "urn:flagsched:problem:validation"
    assert field in [e["field"] for e in problem["errors"]], problem


def test_more_than_the_cap_is_refused_and_nothing_starts(settings, db, tmp_path):
    db.execute("INSERT INTO feature_flags (key) VALUES ('cap')")
    add_dead(db, "cap", 6)
    body = {"action": "retry", "filter": {"flag_key": "cap"}, "dry_run": False}
    with running_admin(settings, tmp_path, admin_bulk_max=5) as api, api.client("admin") as c:
        got = c.post(_URL, json=body)
        assert got.status_code == 422 and got.json()["type"] == "urn:flagsched:problem:too-large"
        assert c.get("/api/admin/bulk-actions/1").status_code == 404
    assert db.execute("SELECT count(*) AS n FROM admin_bulk_actions").fetchone()["n"] == 0


def test_a_job_left_running_is_resumed_by_the_next_server(settings, db, tmp_path):
    db.execute("INSERT INTO feature_flags (key) VALUES ('resume')")
    ids = add_dead(db, "resume", 40)
    # As a server that died after its first batch leaves it: position 10, 10 done.
    db.execute(
        "UPDATE flag_schedules SET status = 'retrying', next_retry_at = now() WHERE id = ANY(%s)",
        (ids[:10],),
    )
    row = db.execute(
        "INSERT INTO admin_bulk_actions (action, filter, created_by, created_role, schedule_ids,"
        " position, done) VALUES ('retry', '{}', 'token:gone', 'operator', %s, 10, 10)"
        " RETURNING id",
        (ids,),
    ).fetchone()
    with running_admin(settings, tmp_path, admin_bulk_batch=7) as api, api.client("viewer") as c:
        final = wait_until(
            lambda: (
                (j := c.get(f"/api/admin/bulk-actions/{row['id']}").json())["status"] == "done"
                and j
            ),
            timeout_s=60,
            what="the resumed job",
        )
    assert (final["position"], final["done"]) == (40, 40)
    left = db.execute(
        "SELECT count(*) AS n FROM flag_schedules WHERE id = ANY(%s) AND status <> 'retrying'",
        (ids,),
    ).fetchone()
    assert left["n"] == 0


def test_a_row_the_database_refuses_is_skipped_and_the_rest_go_on(settings, db, tmp_path):
    add_flag(db, "bad")
    ids = [add_schedule(db, "bad", {"enabled": True}, at=seconds_from_now(900)) for _ in range(5)]
    # A hostile row: attempt 1 is already recorded, so the cancel's own attempt row for
    # attempt 1 violates the attempts' primary key (a real constraint violation).
    db.execute(
        "INSERT INTO schedule_retry_attempts (schedule_id, attempt, started_at, finished_at,"
        " outcome) VALUES (%s, 1, now(), now(), 'retry')",
        (ids[2],),
    )
    body = {"action": "cancel", "filter": {"flag_key": "bad"}, "dry_run": False}
    with running_admin(settings, tmp_path) as api, api.client("operator") as c:
        job = c.post(_URL, json=body).json()
        final = wait_until(
            lambda: (
                (j := c.get(f"/api/admin/bulk-actions/{job['id']}").json())["status"] == "done"
                and j
            ),
            timeout_s=60,
            what="the bulk cancel",
        )
    assert (final["done"], final["skipped"]) == (4, 1)
    rows = db.execute("SELECT id, status FROM flag_schedules ORDER BY id").fetchall()
    assert [r["status"] for r in rows] == [
        "cancelled",
        "cancelled",
        "pending",
        "cancelled",
        "cancelled",
    ]
