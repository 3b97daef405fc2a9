"""The hostile chaos run's comparison with a clean run (bench/chaos.py, issue 11)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bench.chaos import baseline_seed, compare, parse_args

from tests.support.chaos import ALL_HEALTHY, Ledger


def _clean(path: Path, *, schedules: int, seed: int, p99: float) -> Path:
    doc: dict[str, Any] = {
        "schedules": schedules + 8,
        "args": {"schedules": schedules, "seed": None},  # a random seed: only the ledger has it
        "ledger": {"stats": {"seed": seed}},
        "healthy_lateness_ms_by_fault": {ALL_HEALTHY: {"n": 9, "p50": 1.0, "p99": p99}},
    }
    path.write_text(json.dumps(doc))
    return path


def test_a_hostile_run_replays_the_clean_runs_seed_of_the_same_size(tmp_path):
    clean = _clean(tmp_path / "c.json", schedules=500, seed=4242, p99=100.0)
    args = parse_args(["--schedules", "500", "--hostile-percent", "1", "--baseline", str(clean)])
    assert baseline_seed(args) == 4242
    assert args.out.name == "chaos-hostile.json"


def test_a_clean_run_keeps_its_own_file():
    assert parse_args(["--schedules", "500"]).out.name == "chaos.json"


def test_the_percentage_is_bounded():
    with pytest.raises(SystemExit):
        parse_args(["--hostile-percent", "50"])


@pytest.mark.parametrize(("p99", "ratio"), [(110.0, 1.1), (130.0, 1.3)])
def test_compare_gives_the_ratio_of_the_p99s(tmp_path, capsys, p99, ratio):
    clean = _clean(tmp_path / "c.json", schedules=500, seed=1, p99=100.0)
    ledger = Ledger(healthy_lateness={ALL_HEALTHY: {"n": 9, "p50": 1.0, "p99": p99}})
    out = compare(ledger, clean)
    assert out["ratio"] == ratio and out["clean_p99_ms"] == 100.0
    said = capsys.readouterr().out
    assert ("NOT within" in said) is (ratio > 1.2)


def test_compare_without_a_clean_run_says_so(tmp_path, capsys):
    out = compare(Ledger(), tmp_path / "missing.json")
    assert "ratio" not in out and "no clean run" in capsys.readouterr().out
