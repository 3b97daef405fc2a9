"""The SQL of a schedule list page: one status is a literal (so the planner can use the
partial index of migration 0012 in a prepared plan too), and only from a closed set."""

from __future__ import annotations

import pytest

from flagsched.admin.service.access import Actor
from flagsched.admin.service.errors import InvalidInput
from flagsched.admin.service.schedules_read import STATUSES, ScheduleFilter, list_sql

ADMIN = Actor(name="t", role="admin")


@pytest.mark.parametrize("status", STATUSES)
def test_one_status_is_a_literal_and_several_are_a_parameter(status):
    sql, params = list_sql(
        ADMIN, ScheduleFilter(status=[status]), sort="scheduled_at", cursor=None, limit=51
    )
    assert f"status = '{status}'" in sql and params == [51]
    sql, params = list_sql(
        ADMIN, ScheduleFilter(status=[status, "dead"]), sort="scheduled_at", cursor=None, limit=5
    )
    assert "status = ANY(%s)" in sql and params == [[status, "dead"], 5]


def test_a_status_outside_the_closed_set_is_refused_naming_the_field():
    with pytest.raises(InvalidInput) as caught:
        list_sql(
            ADMIN,
            ScheduleFilter(status=["dead' OR true --"]),  # type: ignore[list-item]
            sort="scheduled_at",
            cursor=None,
            limit=51,
        )
    assert caught.value.field == "status"
