"""The exported JSON Schema files match the models; the topic layout is stable."""

from __future__ import annotations

from flagsched.admin.export import export
from flagsched.schemas.topics import TopicLayout


def test_exported_json_schemas_have_not_drifted():
    assert export(check=True) == [], "run `flagsched schemas export` and commit the files"


def test_topic_layout_names_and_count_do_not_depend_on_retries():
    layout = TopicLayout(prefix="fs", tiers_s=(1.0, 5.0, 30.0, 120.0, 600.0, 3600.0))
    assert layout.consumed == [
        "fs.schedule-due.priority",
        "fs.schedule-due",
        "fs.retry.1s",
        "fs.retry.5s",
        "fs.retry.30s",
        "fs.retry.2m",
        "fs.retry.10m",
        "fs.retry.1h",
    ]
    specs = {s.name: s for s in layout.specs()}
    assert specs["fs.control"].configs["cleanup.policy"] == "compact"
    assert len(specs) == 11


def test_event_ids_are_random_version_4_uuids_also_after_a_fork():
    import os

    from flagsched.schemas.events import new_event_id

    ids = {new_event_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert {i.version for i in ids} == {4}
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write, new_event_id().bytes)
        os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert child != new_event_id().bytes  # the parent's next id differs from the child's


def test_subscribers_decode_events_of_a_newer_producer_and_workers_refuse_unknown_due_fields():
    """Schema evolution (docs/subscribers.md): within a version fields are only added,
    and readers ignore the ones they do not know; schedule-due is decoded strictly."""
    import json

    import pytest
    from pydantic import ValidationError

    from flagsched.schemas.events import ControlEvent, LifecycleEvent, ScheduleDue

    newer = {"added_in_a_later_release": {"any": "shape"}}
    lifecycle = LifecycleEvent(
        type="applied", schedule_id=7, flag_key="f", attempt=1, occurred_at="2026-12-01T00:00Z"
    )
    got = LifecycleEvent.model_validate_json(
        json.dumps(json.loads(lifecycle.model_dump_json()) | newer)
    )
    assert got == lifecycle
    control = ControlEvent(state="open", worker_id="w1", at="2026-12-01T00:00Z")
    got_control = ControlEvent.model_validate_json(
        json.dumps(json.loads(control.model_dump_json()) | newer)
    )
    assert got_control == control
    due = ScheduleDue(
        schedule_id=7,
        flag_key="f",
        scheduled_at="2026-12-01T00:00Z",
        dispatched_at="2026-12-01T00:00Z",
    )
    with pytest.raises(ValidationError, match="added_in_a_later_release"):
        ScheduleDue.model_validate_json(json.dumps(json.loads(due.model_dump_json()) | newer))
