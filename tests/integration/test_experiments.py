"""Backoff experiments against real PostgreSQL (the trigger that assigns arms) and a
real pipeline (a held row lock decides between two arms)."""

from __future__ import annotations

import argparse
import json

import pytest

from flagsched.admin.experiment_command import cmd_experiment
from flagsched.admin.experiment_command import register as register_experiment
from flagsched.admin.experiments import (
    ExperimentError,
    experiment_report,
    render_report,
    start_experiment,
    stop_experiment,
)
from flagsched.admin.stats import cmd_stats
from flagsched.admin.stats import register as register_stats
from flagsched.schemas.retry.experiments import Experiment, assign
from tests.support.experiments import ARMS, held_lock_run
from tests.support.pipeline import (
    add_flag,
    add_schedule,
)

pytestmark = pytest.mark.integration


def make(name: str = "exp1") -> Experiment:
    return Experiment.model_validate({"name": name, "arms": ARMS})


def test_trigger_assigns_arms_as_python_does_and_never_reshuffles(settings, db):
    exp = make()
    start_experiment(db, exp, settings.default_retry_policy())
    add_flag(db, "f")
    joined = [add_schedule(db, "f", {"enabled": True}) for _ in range(300)]
    explicit = add_schedule(db, "f", {"enabled": True}, retry_policy={"base_s": 1.0})
    counted = add_schedule(db, "f", {"enabled": True}, max_retries=2)
    rows = {
        r["id"]: r
        for r in db.execute(
            "SELECT id, experiment, experiment_arm, retry_policy FROM flag_schedules"
        ).fetchall()
    }
    for sid in joined:
        arm = assign(exp, sid)
        assert (rows[sid]["experiment"], rows[sid]["experiment_arm"]) == ("exp1", arm.name)
        assert rows[sid]["retry_policy"] == arm.policy.model_dump(exclude_none=True)
    assert {rows[sid]["experiment_arm"] for sid in joined} == {"short", "budget"}
    assert rows[explicit]["experiment"] is None and rows[counted]["experiment"] is None
    # An edit of the schedule or of the experiment does not move a schedule to another arm.
    db.execute("UPDATE flag_schedules SET scheduled_at = now(), updates = '{\"enabled\": false}'")
    db.execute("UPDATE backoff_experiments SET arms = '[]'::jsonb || arms")
    after = {
        r["id"]: r["experiment_arm"]
        for r in db.execute("SELECT id, experiment_arm FROM flag_schedules").fetchall()
    }
    assert all(after[sid] == rows[sid]["experiment_arm"] for sid in joined)
    # One experiment at a time; a stopped one takes no new schedules.
    with pytest.raises(ExperimentError, match="running"):
        start_experiment(db, make("exp2"), settings.default_retry_policy())
    assert stop_experiment(db, "exp1") and not stop_experiment(db, "exp1")
    late = add_schedule(db, "f", {"enabled": True})
    assert (
        db.execute("SELECT experiment FROM flag_schedules WHERE id = %s", (late,)).fetchone()[
            "experiment"
        ]
        is None
    )


def test_a_held_lock_decides_the_experiment_end_to_end(settings, db, dsn, capsys):
    # Real worker, real lock held ~3 s: the arm that dies at the first failure loses.
    parser = argparse.ArgumentParser(prog="flagsched")
    sub = parser.add_subparsers(dest="command", required=True)
    register_experiment(sub, cmd_experiment)
    register_stats(sub, cmd_stats)
    args = parser.parse_args(["experiment", "start", "locks", "--arms", json.dumps(ARMS)])
    assert args.handler(args, settings) == 0
    assert "experiment locks running" in capsys.readouterr().out
    held_lock_run(settings, db, dsn, "exp", 45)
    report = experiment_report(db, "locks", resamples=500)
    by = {a.arm: a for a in report.arms}
    assert by["short"].dead == by["short"].schedules > 0
    assert by["budget"].applied == by["budget"].schedules > 0
    assert by["budget"].recovery_p50_s is not None and by["budget"].recovery_p50_s >= 3.0
    assert report.verdict.winner == "budget"
    assert "verdict: budget wins" in render_report(report)
    args = parser.parse_args(["stats", "--experiment", "locks"])
    assert args.handler(args, settings) == 0
    out = capsys.readouterr().out
    assert "verdict: budget wins" in out and "arm short (weight 1)" in out
    with capsys.disabled():  # the report of a real run, in the test log with -s
        print("\n" + out)
