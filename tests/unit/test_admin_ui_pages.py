"""The pure parts of the schedule detail and dead-letter pages: an edit form sends only
the fields changed, and a filter names the field that is wrong."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from flagsched.admin.ui.invalid import describe
from flagsched.admin.ui.routes.dead_letters import read_filter
from flagsched.admin.ui.routes.schedule import parse_edit

CURRENT = {
    "scheduled_at": "2026-12-01T12:00:00Z",
    "priority": "normal",
    "updates": json.dumps({"enabled": True}),
    "retry_policy": "",
    "max_retries": "",
}


def test_an_unchanged_form_is_refused_and_a_changed_field_is_all_that_is_sent() -> None:
    with pytest.raises(ValidationError, match="nothing to change"):
        parse_edit(dict(CURRENT), CURRENT)
    edit = parse_edit(CURRENT | {"priority": "critical", "max_retries": "7"}, CURRENT)
    assert edit.model_fields_set == {"priority", "max_retries"}
    assert (edit.priority is not None and edit.priority.value, edit.max_retries) == (
        "critical",
        7,
    )
    policy = parse_edit(CURRENT | {"retry_policy": '{"base_s": 1}'}, CURRENT)
    assert policy.retry_policy is not None and policy.retry_policy.base_s == 1


def test_bad_input_names_its_field() -> None:
    with pytest.raises(ValueError, match="Expecting"):
        parse_edit(CURRENT | {"updates": "{not json"}, CURRENT)
    with pytest.raises(ValidationError) as caught:
        parse_edit(CURRENT | {"retry_policy": '{"base_s": -1}'}, CURRENT)
    assert describe(caught.value).startswith("retry_policy.base_s: ")
    with pytest.raises(ValidationError) as caught:
        parse_edit(CURRENT | {"scheduled_at": "2026-12-01T12:00:00"}, CURRENT)
    assert "scheduled_at" in describe(caught.value)


def test_dead_letter_filters() -> None:
    f, error = read_filter({"flag_prefix": "team.", "reason": "permanent", "flag_key": ""})
    assert error == "" and f is not None
    assert (f.flag_prefix, f.reason, f.flag_key) == ("team.", "permanent", None)
    f, error = read_filter({"dead_after": "yesterday"})
    assert f is None and error.startswith("dead_after: ")
    f, error = read_filter({"reason": "bored"})
    assert f is None and error.startswith("reason: ")
