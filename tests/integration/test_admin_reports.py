"""The read-only reports of the admin API over a real uvicorn server: the notifier's
deliveries (rows written by the real notifier against real loopback receivers) and
the backoff experiments (schedules run by a real worker against a held row lock)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from flagsched.admin.experiments import (
    MAX_BOOTSTRAP_DRAWS,
    bootstrap_draws,
    experiment_outcomes,
    experiment_report,
    start_experiment,
    stop_experiment,
)
from flagsched.schemas.retry.experiments import Experiment
from tests.support.admin import running_admin
from tests.support.experiments import ARMS, held_lock_run
from tests.support.notify import (
    NEW_SECRET,
    add_dead_schedules,
    config_for,
    lifecycle,
    notify_settings,
    publish_lifecycle,
    running_notifier,
    statuses,
)
from tests.support.pipeline import (
    add_flag,
    add_schedule,
    wait_until,
)
from tests.support.receivers import receivers

pytestmark = pytest.mark.integration

_DB_VIEW = """
SELECT d.event_key, d.sink, d.status, d.attempts, d.response_code, d.schedule_id,
       m.id::text AS message_id, m.dedup_key
  FROM notification_deliveries d LEFT JOIN notification_messages m ON m.id = d.message_id
"""


def _field_errors(got: Any) -> list[str]:
    assert got.status_code == 422, got.text
    assert got.headers["content-type"] == "application/problem+json"
    body = got.json()
    assert body["type"] == "urn:flagsched:problem:validation"
    return [e["field"] for e in body["errors"]]


@pytest.fixture
def recv():
    made = receivers((NEW_SECRET,))
    yield made
    for r in made.values():
        r.down()


def test_notifications_show_what_the_notifier_recorded_filtered_and_paged(
    settings, db, recv, tmp_path
):
    sids = add_dead_schedules(db, 2, priority="critical")
    hook, pd = recv["webhook"], recv["pagerduty"]
    hook.respond((500, {}))  # the webhook's first send fails: its deliveries retry once
    config = config_for({"webhook": hook, "pagerduty": pd}, group_wait_s=0)
    with running_notifier(settings, notify_settings(), config):
        publish_lifecycle(settings, [lifecycle(sids[0])])
        wait_until(lambda: statuses(db) == {"sent": 2}, what="the first event at both sinks")
        publish_lifecycle(settings, [lifecycle(sids[1])])
        wait_until(lambda: statuses(db).get("sent") == 4, what="the second event at both sinks")
    rows = {(r["event_key"], r["sink"]): r for r in db.execute(_DB_VIEW).fetchall()}
    assert len(rows) == 4
    with running_admin(settings, tmp_path) as api, api.client("viewer") as viewer:
        everything = viewer.get("/api/admin/notifications").json()
        hooks = viewer.get("/api/admin/notifications", params={"sink": "webhook"}).json()
        one = viewer.get("/api/admin/notifications", params={"schedule_id": sids[1]}).json()
        none_failed = viewer.get(
            "/api/admin/notifications", params={"status": ["failed", "retrying"]}
        ).json()
        pages, cursor = [], None
        while True:
            params: dict[str, Any] = {"limit": 1} | ({"cursor": cursor} if cursor else {})
            page = viewer.get("/api/admin/notifications", params=params).json()
            pages.append(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        bad = {
            "status": viewer.get("/api/admin/notifications", params={"status": "lost"}),
            "limit": viewer.get("/api/admin/notifications", params={"limit": 0}),
            "naive": viewer.get(
                "/api/admin/notifications", params={"updated_after": "2026-01-01T00:00:00"}
            ),
            "range": viewer.get(
                "/api/admin/notifications",
                params={
                    "updated_after": "2026-01-02T00:00:00Z",
                    "updated_before": "2026-01-01T00:00:00Z",
                },
            ),
            "cursor": viewer.get("/api/admin/notifications", params={"cursor": "bm90LWpzb24"}),
            "sink": viewer.get("/api/admin/notifications", params={"sink": "a b"}),
        }
        with api.client(None) as anonymous:
            assert anonymous.get("/api/admin/notifications").status_code == 401

    items = everything["items"]
    assert everything["next_cursor"] is None and len(items) == 4
    for item in items:  # the API shows the notifier's rows as they are
        row = rows[(item["event_key"], item["sink"])]
        for key in ("status", "attempts", "response_code", "schedule_id", "message_id"):
            assert item[key] == row[key], key
        assert item["dedup_key"] == row["dedup_key"]
        assert item["updated_at"].endswith("Z") and item["created_at"].endswith("Z")
    stamps = [datetime.fromisoformat(i["updated_at"]) for i in items]
    assert stamps == sorted(stamps, reverse=True)  # newest first
    codes = {(i["sink"], i["response_code"]) for i in items}
    assert codes == {("webhook", 204), ("pagerduty", 202)}
    # the webhook's first message was sent twice (500, then 204), the second once
    assert sorted(i["attempts"] for i in hooks["items"]) == [1, 2]
    assert {i["sink"] for i in hooks["items"]} == {"webhook"}
    assert {(i["schedule_id"], i["sink"]) for i in one["items"]} == {
        (sids[1], "webhook"),
        (sids[1], "pagerduty"),
    }
    assert none_failed["items"] == []
    # one row per page, each exactly once, in the same order as the single page
    assert [len(p) for p in pages] == [1, 1, 1, 1]
    assert [p[0] for p in pages] == items
    assert _field_errors(bad["status"]) == ["query.status.0"]
    assert _field_errors(bad["limit"]) == ["query.limit"]
    assert _field_errors(bad["naive"]) == ["query.updated_after"]
    assert _field_errors(bad["range"]) == ["updated_before"]
    assert _field_errors(bad["cursor"]) == ["cursor"]
    assert _field_errors(bad["sink"]) == ["query.sink"]


def test_the_experiment_report_through_the_api_is_the_clis_and_names_the_winner(
    settings, db, dsn, tmp_path
):
    defaults = settings.default_retry_policy()
    start_experiment(db, Experiment.model_validate({"name": "old", "arms": ARMS}), defaults)
    stop_experiment(db, "old")
    start_experiment(db, Experiment.model_validate({"name": "locks", "arms": ARMS}), defaults)
    sids = held_lock_run(settings, db, dsn, "locks", 45)
    cli = json.loads(experiment_report(db, "locks", resamples=500, seed=3).to_json())
    with running_admin(settings, tmp_path) as api, api.client("viewer") as viewer:
        got = viewer.get(
            "/api/admin/experiments/locks/report", params={"resamples": 500, "seed": 3}
        )
        listed = viewer.get("/api/admin/experiments").json()
        running = viewer.get("/api/admin/experiments", params={"running": True}).json()
        first = viewer.get("/api/admin/experiments", params={"limit": 1}).json()
        second = viewer.get(
            "/api/admin/experiments", params={"limit": 1, "cursor": first["next_cursor"]}
        ).json()
        unknown = viewer.get("/api/admin/experiments/nope/report")
        bad = {
            "name": viewer.get("/api/admin/experiments/no%20spaces/report"),
            "resamples": viewer.get("/api/admin/experiments/locks/report", params={"resamples": 5}),
            "seed": viewer.get("/api/admin/experiments/locks/report", params={"seed": -1}),
            "cursor": viewer.get("/api/admin/experiments", params={"cursor": "!!"}),
        }

    assert got.status_code == 200, got.text
    report = got.json()
    assert report["verdict"] == cli["verdict"]
    assert report["verdict"]["winner"] == "budget"
    by = {a["arm"]: a for a in report["arms"]}
    assert sum(a["schedules"] for a in report["arms"]) == len(sids)
    assert by["short"]["dead"] == by["short"]["schedules"] > 0
    assert by["short"]["dead_rate"] == 1.0 and by["short"]["applied_rate_ci"]["low"] == 0.0
    assert by["budget"]["applied"] == by["budget"]["schedules"] > 0
    assert by["budget"]["recovery_p50_s"] >= 3.0
    low, high = by["budget"]["recovery_p99_ci"]["low"], by["budget"]["recovery_p99_ci"]["high"]
    assert low <= by["budget"]["recovery_p99_s"] <= high
    for api_arm, cli_arm in zip(report["arms"], cli["arms"], strict=True):
        for key, value in cli_arm.items():  # the same figures, intervals as {low, high}
            shown = api_arm[key]
            if key.endswith("_ci") and value is not None:
                shown = [shown["low"], shown["high"]]
            assert shown == value, key
    assert (report["resamples"], report["seed"]) == (500, 3)

    assert [e["name"] for e in listed["items"]] == ["locks", "old"]
    locks = listed["items"][0]
    assert locks["running"] is True and locks["stopped_at"] is None
    assert locks["schedules"] == len(sids)
    assert [(a["name"], a["weight"]) for a in locks["arms"]] == [("short", 1), ("budget", 2)]
    assert listed["items"][1]["running"] is False and listed["items"][1]["schedules"] == 0
    assert [e["name"] for e in running["items"]] == ["locks"]
    assert [e["name"] for e in first["items"] + second["items"]] == ["locks", "old"]
    assert second["next_cursor"] is None

    assert unknown.status_code == 404
    assert unknown.json()["type"] == "urn:flagsched:problem:not-found"
    assert _field_errors(bad["name"]) == ["path.name"]
    assert _field_errors(bad["resamples"]) == ["query.resamples"]
    assert _field_errors(bad["seed"]) == ["query.seed"]
    assert _field_errors(bad["cursor"]) == ["cursor"]


def test_a_report_beyond_the_bootstrap_bound_is_a_422_naming_resamples(settings, db, tmp_path):
    # 40 applied schedules, each finished at another attempt: 10,000 resamples would be
    # 10,000 x (40 + 4) draws, beyond MAX_BOOTSTRAP_DRAWS; 1,000 are within it.
    experiment = Experiment.model_validate({"name": "wide", "arms": ARMS[1:]})
    start_experiment(db, experiment, settings.default_retry_policy())
    add_flag(db, "wide")
    sids = [add_schedule(db, "wide", {"enabled": True}) for _ in range(40)]
    db.execute(
        "UPDATE flag_schedules SET status = 'applied', finished_at = now(),"
        " first_failed_at = now() - make_interval(secs => id %% 40 + 1),"
        " finished_attempt = id - %s + 1 WHERE id = ANY(%s)",
        (min(sids), sids),
    )
    assert bootstrap_draws([experiment_outcomes(db, "wide")], 10_000) > MAX_BOOTSTRAP_DRAWS
    with running_admin(settings, tmp_path) as api, api.client("viewer") as viewer:
        refused = viewer.get("/api/admin/experiments/wide/report", params={"resamples": 10_000})
        within = viewer.get("/api/admin/experiments/wide/report", params={"resamples": 1000})
    assert _field_errors(refused) == ["query.resamples"]
    assert f"bound of {MAX_BOOTSTRAP_DRAWS // 44}" in refused.json()["detail"]
    assert within.status_code == 200, within.text
    assert within.json()["arms"][0]["applied"] == 40
