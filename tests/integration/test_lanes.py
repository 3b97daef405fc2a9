"""The priority lane: a critical schedule overtakes a large normal backlog."""

from __future__ import annotations

import pytest

from tests.integration.test_reliability import applied_count, due_records, publish, seed
from tests.support.pipeline import (
    add_flag,
    add_schedule,
    running_dispatcher,
    running_worker,
    status_is,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_critical_schedule_overtakes_the_normal_backlog(make_settings, db, dsn):
    settings = make_settings(max_poll_records=50)
    backlog = seed(db, 3000)
    publish(settings, due_records(settings, db, backlog))  # already queued in Kafka
    add_flag(db, "holiday.promo")
    with running_worker(settings):
        wait_until(lambda: applied_count(dsn) >= 200, what="worker busy with the backlog")
        critical = add_schedule(db, "holiday.promo", {"enabled": True}, priority="critical")
        with running_dispatcher(settings):
            wait_until(
                lambda: status_is(db, critical, "dispatched", "applied"), what="critical dispatched"
            )
            before = applied_count(dsn)
            wait_until(lambda: status_is(db, critical, "applied"), what="critical applied")
            overtaken = applied_count(dsn) - 1 - before
            wait_until(
                lambda: applied_count(dsn) == len(backlog) + 1,
                what="backlog drained",
                timeout_s=120,
            )
    print(f"normal schedules applied between dispatch and the critical one: {overtaken}")
    # a few polls' worth while the priority fetch arrives, never the buffered backlog
    # (with the lane switched off, 2,700 of the 3,000 went first)
    assert overtaken <= len(backlog) // 10, overtaken
    row = db.execute(
        "SELECT topic FROM schedule_retry_attempts WHERE schedule_id = %s", (critical,)
    ).fetchone()
    assert row["topic"].endswith(".schedule-due.priority")
