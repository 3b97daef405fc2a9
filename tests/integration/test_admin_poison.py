"""Poison records are listed from the dead-letter topic and republished only by an
admin, explicitly, through the outbox, with an audit row."""

from __future__ import annotations

import pytest

from flagsched.runtime.clients import make_producer
from flagsched.schemas.headers import RecordHeaders
from tests.support.admin import running_admin
from tests.support.pipeline import header_map, read_topic, running_worker, wait_until

pytestmark = pytest.mark.integration


def test_a_poison_record_is_listed_and_republished_by_an_admin(settings, db, tmp_path):
    layout = settings.topic_layout()
    producer = make_producer(settings)
    headers = RecordHeaders(attempt=1, due_ms=0).encode()
    producer.send(layout.due, key=b"junk", value=b"{not json", headers=headers).get(timeout=10)
    producer.close()
    with running_worker(settings), running_admin(settings, tmp_path) as api:
        [dead] = read_topic(settings, layout.dead_letter, expect=1)
        assert header_map(dead)["flagsched-dlt-reason"] == "poison"
        with api.client("viewer") as viewer:
            listed = wait_until(
                lambda: viewer.get("/api/admin/dead-letters/poison").json()["items"],
                what="the poison record listed",
            )
        [item] = listed
        assert (item["partition"], item["offset"]) == (dead.partition, dead.offset)
        assert item["value_preview"] == "{not json" and item["origin_topic"] == layout.due
        assert item["value_escaped"] == "{not json" and item["value_bytes"] == 9
        body = {"partition": dead.partition, "offset": dead.offset}
        with api.client("operator") as operator:
            assert (
                operator.post("/api/admin/dead-letters/poison/republish", json=body).status_code
                == 403
            )
        with api.client("admin") as admin:
            missing = admin.post(
                "/api/admin/dead-letters/poison/republish", json=body | {"offset": 999}
            )
            done = admin.post("/api/admin/dead-letters/poison/republish", json=body)
        assert missing.status_code == 404
        assert done.status_code == 200, done.text
        assert done.json()["topic"] == layout.due
        # Republished as it was: still undecodable, so the worker dead-letters it again.
        records = read_topic(settings, layout.due, expect=2)
        assert [r.value for r in records] == [b"{not json", b"{not json"]
        read_topic(settings, layout.dead_letter, expect=2)
    [row] = db.execute("SELECT * FROM admin_audit").fetchall()
    assert row["action"] == "dead_letters.republish" and row["actor"] == "token:admin"
