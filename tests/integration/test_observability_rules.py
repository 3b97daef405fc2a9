"""The deploy/ files stay true: the alert rules pass promtool (syntax and their unit
tests), and every metric that the dashboard and the rules reference is exported by a
real running worker."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flagsched.runtime.telemetry.backlog import BacklogCollector
from flagsched.runtime.telemetry.metrics import Metrics
from tests.support.pipeline import (
    add_flag,
    add_schedule,
    hold_flag_lock,
    running_dispatcher,
    running_worker,
    status_is,
    wait_until,
)
from tests.support.required import unavailable

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "flagsched-dashboard.json"
METRIC = re.compile(r"\bflagsched_[A-Za-z0-9_]+")
HISTOGRAM_SUFFIX = re.compile(r"_(bucket|sum|count)$")


def promtool() -> str:
    path = shutil.which("promtool")
    if path is not None:
        return path
    reason = "promtool is missing (it comes with the Debian/Ubuntu package 'prometheus')"
    unavailable(reason)


@pytest.mark.parametrize(
    "args",
    [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
        ["check", "config", "prometheus.yml"],
    ],
    ids=["check-rules", "test-rules", "check-config"],
)
def test_promtool_accepts_the_prometheus_files(args):
    done = subprocess.run(
        [promtool(), *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


def alert_expressions(text: str) -> list[str]:
    """The ``expr`` of every rule: inline scalars and ``>-``/``|`` blocks (the forms
    alerts.yml uses); a rule whose expr this misses fails the count check below."""
    exprs: list[str] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if match is None:
            continue
        indent, rest = len(match[1]), match[2].strip()
        if rest[:1] in (">", "|"):
            block = []
            for nxt in lines[i + 1 :]:
                if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                    break
                block.append(nxt.strip())
            rest = " ".join(block)
        exprs.append(rest.strip("'\""))
    assert len(exprs) == len(re.findall(r"^\s*- alert:", text, re.M)), "an expr was missed"
    assert all(exprs), exprs
    return exprs


def dashboard_queries(node: Any) -> list[str]:
    """Every PromQL string of the dashboard: panel targets and variable queries."""
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k in ("expr", "definition") and isinstance(v, str)]
        return found + [q for v in node.values() for q in dashboard_queries(v)]
    if isinstance(node, list):
        return [q for v in node for q in dashboard_queries(v)]
    return []


def referenced_metrics() -> dict[str, str]:
    """Metric name -> where it is referenced."""
    refs: dict[str, str] = {}
    for expr in alert_expressions((PROMETHEUS / "alerts.yml").read_text()):
        refs.update(dict.fromkeys(METRIC.findall(expr), "alerts.yml"))
    for query in dashboard_queries(json.loads(DASHBOARD.read_text())):
        refs.update(dict.fromkeys(METRIC.findall(query), DASHBOARD.name))
    return refs


def test_the_dashboard_is_well_formed():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["schemaVersion"] >= 39
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert p["targets"], p["title"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])


def sample_value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_every_referenced_metric_is_exported_by_a_running_worker(settings, db, dsn):
    refs = referenced_metrics()
    assert len(refs) >= 20, sorted(refs)  # the extraction found the queries
    metrics = Metrics()
    BacklogCollector(dsn, settings.retry_tiers_s, min_interval_s=0).register(metrics.registry)
    add_flag(db, "obs.ok")
    add_flag(db, "obs.busy")
    ok = add_schedule(db, "obs.ok", {"enabled": True})
    busy = add_schedule(db, "obs.busy", {"enabled": True}, max_retries=1)
    _, release = hold_flag_lock(dsn, "obs.busy")
    try:
        with (
            metrics.serve(port=0) as server,
            running_worker(
                settings,
                on_breaker=metrics.set_breaker,
                metrics=metrics,
            ),
            running_dispatcher(settings),
        ):
            wait_until(
                lambda: (
                    sample_value(metrics, "flagsched_schedules_applied_total") == 1
                    and sample_value(metrics, "flagsched_dead_letters_total", reason="exhausted")
                    == 1
                ),
                what="one schedule applied and one dead-lettered as exhausted",
            )
            with urllib.request.urlopen(server.url, timeout=10) as resp:
                body = resp.read().decode()
    finally:
        release()
    assert status_is(db, ok, "applied")
    assert status_is(db, busy, "dead")

    families = list(text_string_to_metric_families(body))
    samples = {s.name: s for f in families for s in f.samples}
    histograms = {f.name for f in families if f.type == "histogram" and f.samples}
    missing = {
        name: where
        for name, where in refs.items()
        if name not in samples and HISTOGRAM_SUFFIX.sub("", name) not in histograms
    }
    assert not missing, f"referenced but not exported by a running worker: {missing}"
    assert samples["flagsched_retry_lateness_seconds_count"].labels["tier"] == "0.5"
    assert samples["flagsched_backlog_up"].value == 1
