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
