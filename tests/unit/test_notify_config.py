"""The notifier's rules file: validated at start, errors name the key; rule matching."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flagsched.notifier.config import EventKind, load_config, parse_config
from flagsched.notifier.notice import Notice
from flagsched.notifier.rules import matches, route
from flagsched.runtime.errors import ConfigError
from flagsched.schemas.events import Priority

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()

YAML = f"""
source: flagsched-test
links:
  admin_url: https://admin.example.com/schedules/{{schedule_id}}
sinks:
  ops-slack:
    type: slack
    url: ${{TEST_SLACK_URL}}
  oncall:
    type: pagerduty
    routing_key: R0UTINGKEY0123456789abcdef012345
  hook:
    type: webhook
    url: https://hooks.example.com/flagsched
    secrets: ["{SECRET}"]
rules:
  - name: critical-dead
    events: [dead_lettered]
    priorities: [critical]
    flag_keys: ["promo.*"]
    sinks: [oncall, ops-slack]
  - name: all-dead
    events: [dead_lettered, applied_after_retries]
    reasons: [exhausted, permanent]
    sinks: [ops-slack, hook]
    group_wait_s: 2
"""


def _notice(**kw: object) -> Notice:
    values: dict[str, object] = {
        "key": "lifecycle:1:dead_lettered:4",
        "kind": EventKind.DEAD_LETTERED,
        "occurred_at": datetime.now(UTC),
        "schedule_id": 1,
        "flag_key": "promo.banner",
        "priority": Priority.CRITICAL,
        "reason": "exhausted",
        "error_class": "infrastructure",
        "attempt": 4,
    }
    values.update(kw)
    return Notice.model_validate(values)


def test_a_yaml_file_loads_with_secrets_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_SLACK_URL", "https://hooks.slack.com/services/T/B/X")
    path = tmp_path / "notify.yaml"
    path.write_text(YAML)
    config = load_config(path)
    slack = config.sinks["ops-slack"]
    assert slack.type == "slack"
    assert slack.url.get_secret_value() == "https://hooks.slack.com/services/T/B/X"
    assert "hooks.slack.com" not in repr(config)  # secrets never show in a repr or a log
    assert config.rule("all-dead").group_wait_s == 2


def test_a_toml_file_loads_too(tmp_path):
    path = tmp_path / "notify.toml"
    path.write_text(
        'source = "x"\n[sinks.hook]\ntype = "webhook"\nurl = "https://h.example.com/"\n'
        f'secrets = ["{SECRET}"]\n[[rules]]\nname = "r"\nevents = ["breaker_opened"]\n'
        'sinks = ["hook"]\n'
    )
    assert load_config(path).rules[0].events == [EventKind.BREAKER_OPENED]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda y: y.replace("sinks: [oncall, ops-slack]", "sinks: [pager]"), "rules.0.sinks.0"),
        (lambda y: y.replace("group_wait_s: 2", "group_wait_s: -1"), "rules.1.group_wait_s"),
        (lambda y: y.replace("[dead_lettered]", "[exploded]"), "rules.0.events.0"),
        (lambda y: y.replace("type: pagerduty", "type: pagerduty\n    colour: red"), "colour"),
        (lambda y: y.replace(SECRET, "hunter2"), "sinks.hook.webhook.secrets.0"),
        (lambda y: y.replace("${TEST_SLACK_URL}", "${NOT_SET_ANYWHERE}"), "NOT_SET_ANYWHERE"),
        (lambda y: y.replace("name: all-dead", "name: critical-dead"), "rules.1.name"),
        (lambda y: y.replace("[dead_lettered, applied", "[backlog, applied"), "backlog_over"),
    ],
)
def test_a_bad_file_fails_at_start_naming_the_key(tmp_path, monkeypatch, change, named):
    monkeypatch.setenv("TEST_SLACK_URL", "https://hooks.slack.com/services/T/B/X")
    path = tmp_path / "notify.yaml"
    path.write_text(change(YAML))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert named in str(err.value)
    assert "FLAGSCHED_NOTIFY_CONFIG" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_an_unknown_suffix_or_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="must end in"):
        load_config(tmp_path.joinpath("x.json"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path.joinpath("absent.yaml"))


def test_rules_match_on_event_reason_priority_glob_and_error_class(monkeypatch):
    monkeypatch.setenv("TEST_SLACK_URL", "https://hooks.slack.com/services/T/B/X")
    import yaml

    config = parse_config(yaml.safe_load(YAML))
    critical, alldead = config.rules
    assert matches(critical, _notice())
    assert not matches(critical, _notice(priority=Priority.NORMAL))
    assert not matches(critical, _notice(flag_key="checkout.v2"))
    assert not matches(critical, _notice(kind=EventKind.RETRY_SCHEDULED))
    assert not matches(alldead, _notice(reason="poison"))
    assert matches(alldead, _notice(kind=EventKind.APPLIED_AFTER_RETRIES, reason=None))
    # one delivery per (event, sink): ops-slack is taken by the first rule that names it
    routed = {sink: rule.name for rule, sink in route(config, _notice())}
    assert routed == {"oncall": "critical-dead", "ops-slack": "critical-dead", "hook": "all-dead"}
    narrowed = critical.model_copy(update={"error_classes": ["flag_not_found"]})
    assert not matches(narrowed, _notice())
    assert matches(narrowed, _notice(error_class="flag_not_found"))


def test_a_flag_glob_never_matches_a_breaker_change(monkeypatch):
    monkeypatch.setenv("TEST_SLACK_URL", "https://hooks.slack.com/services/T/B/X")
    import yaml

    rule = parse_config(yaml.safe_load(YAML)).rules[0]
    rule = rule.model_copy(update={"events": [EventKind.BREAKER_OPENED]})
    breaker = _notice(kind=EventKind.BREAKER_OPENED, schedule_id=None, flag_key=None)
    assert not matches(rule, breaker)


@given(key=st.from_regex(r"[a-z]{1,8}\.[a-z0-9_-]{1,12}", fullmatch=True))
def test_a_prefix_glob_matches_exactly_the_keys_with_that_prefix(key):
    from flagsched.notifier.config import Rule

    rule = Rule(name="r", events=[EventKind.DEAD_LETTERED], flag_keys=["promo.*"], sinks=["s"])
    assert matches(rule, _notice(flag_key=key)) == key.startswith("promo.")


def test_example_config_in_the_docs_is_valid(monkeypatch):
    """docs/notifications.md's example is a file a user copies: it must load."""
    import re

    import yaml

    doc = Path(__file__).resolve().parents[2].joinpath("docs", "notifications.md").read_text()
    block = re.search(r"```yaml\n(# notify\.yaml.*?)```", doc, re.S)
    assert block, "docs/notifications.md has no ```yaml # notify.yaml example"
    for name in re.findall(r"\$\{([A-Z_]+)\}", block[1]):
        value = SECRET if "SECRET" in name else "https://hooks.slack.com/services/T/B/X"
        monkeypatch.setenv(name, value)
    assert parse_config(yaml.safe_load(block[1])).rules


def test_every_notifier_setting_is_documented():
    from flagsched.notifier.settings import NotifySettings

    doc = Path(__file__).resolve().parents[2].joinpath("docs", "notifications.md").read_text()
    for name in NotifySettings.model_fields:
        var = f"FLAGSCHED_NOTIFY_{name.upper()}"
        short = "_" + name.upper() if name.startswith("retry_") else None
        assert var in doc or (short and f"`{short}`" in doc), (
            f"{var} is not in docs/notifications.md"
        )


def test_a_bad_setting_names_its_variable(monkeypatch):
    from flagsched.notifier.settings import load_notify_settings

    monkeypatch.setenv("FLAGSCHED_NOTIFY_HTTP_TIMEOUT_S", "-1")
    with pytest.raises(ConfigError, match="FLAGSCHED_NOTIFY_HTTP_TIMEOUT_S"):
        load_notify_settings()
