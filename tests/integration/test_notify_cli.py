"""`flagsched notify test --sink NAME` against loopback receivers, and the webhook
signature checked by the standardwebhooks package while a secret rotates."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import pytest

from tests.support.notify import NEW_SECRET, OLD_SECRET, config_file, sinks_for
from tests.support.receivers import Receiver, pagerduty_contract, webhook_contract

OTHER = "whsec_" + base64.b64encode(b"someone-elses-key-0123456789abcd").decode()


def _notify_test(path: str, sink: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLAGSCHED_")}
    environ.update({"FLAGSCHED_NOTIFY_CONFIG": path, **env})
    return subprocess.run(
        [sys.executable, "-m", "flagsched.cli", "notify", "test", "--sink", sink],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("known", [NEW_SECRET, OLD_SECRET], ids=["new-secret", "old-secret"])
def test_a_receiver_knowing_either_secret_verifies_during_a_rotation(tmp_path, known):
    hook = Receiver("webhook", webhook_contract(known))
    try:
        path = config_file(
            tmp_path,
            {
                "sinks": sinks_for({"webhook": hook}),
                "rules": [{"name": "r", "events": ["dead_lettered"], "sinks": ["webhook"]}],
            },
        )
        done = _notify_test(path, "webhook", FLAGSCHED_NOTIFY_ALLOW_INSECURE="true")
    finally:
        hook.down()
    assert done.returncode == 0, done.stderr
    assert "webhook (webhook) trigger: HTTP 204 delivered" in done.stdout
    assert hook.problems == []
    (got,) = hook.received
    assert len(got.headers["webhook-signature"].split(" ")) == 2  # both keys sign
    assert got.json["type"] == "flagsched.dead_lettered"


def test_a_receiver_with_another_secret_rejects_and_the_command_fails(tmp_path):
    hook = Receiver("webhook", webhook_contract(OTHER))
    try:
        path = config_file(
            tmp_path,
            {
                "sinks": sinks_for({"webhook": hook}),
                "rules": [{"name": "r", "events": ["dead_lettered"], "sinks": ["webhook"]}],
            },
        )
        done = _notify_test(path, "webhook", FLAGSCHED_NOTIFY_ALLOW_INSECURE="true")
    finally:
        hook.down()
    assert done.returncode == 2
    assert "HTTP 400" in done.stderr
    assert hook.problems and "signature" in hook.problems[0]
    assert "whsec_" not in done.stderr + done.stdout  # secrets never printed


def test_notify_test_pages_and_resolves_an_incident_sink(tmp_path):
    pd = Receiver("pagerduty", pagerduty_contract)
    try:
        path = config_file(
            tmp_path,
            {
                "sinks": sinks_for({"pagerduty": pd}),
                "rules": [{"name": "r", "events": ["dead_lettered"], "sinks": ["pagerduty"]}],
            },
        )
        done = _notify_test(path, "pagerduty", FLAGSCHED_NOTIFY_ALLOW_INSECURE="true")
        refused = _notify_test(path, "pagerduty")  # plain http without the test switch
    finally:
        pd.down()
    assert done.returncode == 0, done.stderr
    actions = [r.json["event_action"] for r in pd.received]
    assert actions == ["trigger", "resolve"]
    assert len({r.json["dedup_key"] for r in pd.received}) == 1
    assert refused.returncode == 2 and "a loopback address" in refused.stderr
    assert len(pd.received) == 2  # the refused run sent nothing


def test_a_bad_rules_file_or_an_unknown_sink_stops_with_the_key_named(tmp_path):
    path = config_file(
        tmp_path,
        {"sinks": {}, "rules": [{"name": "r", "events": ["dead_lettered"], "sinks": ["pager"]}]},
    )
    done = _notify_test(path, "pager")
    assert done.returncode == 2
    assert "rules.0.sinks.0: unknown sink 'pager'" in done.stderr
    ok = config_file(
        tmp_path,
        {
            "sinks": sinks_for({"webhook": Receiver("webhook", webhook_contract(NEW_SECRET))}),
            "rules": [{"name": "r", "events": ["dead_lettered"], "sinks": ["webhook"]}],
        },
    )
    assert "--sink slack: not in the rules file" in _notify_test(ok, "slack").stderr
