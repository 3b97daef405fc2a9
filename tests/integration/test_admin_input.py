"""Bad input gets problem+json naming the field (422), oversized bodies 413, never a 500;
the create and list endpoints fuzzed with Hypothesis against the running server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests.support.admin import AdminApi, running_admin
from tests.support.pipeline import add_flag

pytestmark = pytest.mark.integration

_OK = {"updates": {"enabled": True}, "scheduled_at": "2030-01-01T00:00:00Z"}
_CREATE = "/api/admin/flags/promo/schedules"


@pytest.fixture
def api(settings: Any, db: Any, tmp_path: Any) -> Iterator[AdminApi]:
    add_flag(db, "promo")
    with running_admin(settings, tmp_path) as running:
        yield running


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_OK | {"colour": "red"}, "colour"),
        (_OK | {"scheduled_at": "2030-01-01T00:00:00"}, "scheduled_at"),
        (_OK | {"scheduled_at": "tomorrow"}, "scheduled_at"),
        (_OK | {"updates": {"enabled": True, "bogus": 1}}, "updates.bogus"),
        (_OK | {"updates": {}}, "updates"),
        (_OK | {"updates": {"rollout_percentage": 101}}, "updates.rollout_percentage"),
        (_OK | {"retry_policy": {"base_s": -1}}, "retry_policy.base_s"),
        (_OK | {"retry_policy": {"jitter": "lots"}}, "retry_policy.jitter"),
        (_OK | {"retry_policy": {"floor_s": 100, "cap_s": 10}}, "retry_policy"),
        (_OK | {"retry_policy": {"unknown_key": 1}}, "retry_policy.unknown_key"),
        (_OK | {"max_retries": -1}, "max_retries"),
        (_OK | {"priority": "urgent"}, "priority"),
    ],
)
def test_bad_create_bodies_get_422_naming_the_field(api, body, field):
    with api.client("operator") as client:
        got = client.post(_CREATE, json=body)
    assert got.status_code == 422, got.text
    assert got.headers["content-type"] == "application/problem+json"
    problem = got.json()
    assert problem["type"] == "urn:flagsched:problem:validation"
    assert problem["status"] == 422 and problem["instance"] == _CREATE
    assert field in [e["field"] for e in problem["errors"]], problem


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "slug", "field"),
    [
        (
            "POST",
            "/api/admin/flags/bad key!/schedules",
            {"json": _OK},
            422,
            "validation",
            "path.flagKey",
        ),
        (
            "POST",
            _CREATE,
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            422,
            "validation",
            None,
        ),
        ("GET", "/api/admin/schedules?sort=colour", {}, 422, "validation", "query.sort"),
        ("GET", "/api/admin/schedules?status=waiting", {}, 422, "validation", "query.status.0"),
        (
            "GET",
            "/api/admin/schedules?due_after=2030-01-01T00:00:00",
            {},
            422,
            "validation",
            "query.due_after",
        ),
        ("GET", "/api/admin/schedules?limit=0", {}, 422, "validation", "query.limit"),
        ("GET", "/api/admin/schedules?cursor=!!!", {}, 422, "validation", "cursor"),
        ("GET", "/api/admin/flags/promo/schedules/0", {}, 422, "validation", "path.scheduleId"),
        ("GET", "/api/admin/flags/promo/schedules/12345", {}, 404, "not-found", None),
        ("POST", "/api/admin/flags/nosuchflag/schedules", {"json": _OK}, 404, "not-found", None),
        ("PATCH", "/api/admin/flags/promo/schedules/1", {"json": {}}, 422, "validation", None),
        (
            "POST",
            _CREATE,
            {"json": _OK, "headers": {"Idempotency-Key": ""}},
            422,
            "validation",
            "header.Idempotency-Key",
        ),
    ],
)
def test_each_class_of_bad_request_gets_its_problem(api, method, path, kwargs, status, slug, field):
    with api.client("operator") as client:
        got = client.request(method, path, **kwargs)
    assert got.status_code == status, got.text
    assert got.headers["content-type"] == "application/problem+json"
    assert got.json()["type"] == f"urn:flagsched:problem:{slug}"
    if field is not None:
        assert field in [e["field"] for e in got.json()["errors"]]


def test_bodies_over_64_kib_get_413_with_or_without_a_length(api):
    big = {"updates": {"config": {"blob": "x" * 70_000}}, "scheduled_at": "2030-01-01T00:00:00Z"}
    with api.client("operator") as client:
        sized = client.post(_CREATE, json=big)

        def chunks() -> Iterator[bytes]:
            yield b'{"updates": {"config": {"blob": "'
            for _ in range(70):
                yield b"x" * 1000
            yield b'"}}, "scheduled_at": "2030-01-01T00:00:00Z"}'

        chunked = client.post(
            _CREATE, content=chunks(), headers={"content-type": "application/json"}
        )
        fits = client.post(_CREATE, json=big | {"updates": {"config": {"blob": "x" * 60_000}}})
    for got in (sized, chunked):
        assert got.status_code == 413, got.text
        assert got.headers["content-type"] == "application/problem+json"
        assert got.json()["type"] == "urn:flagsched:problem:too-large"
    assert fits.status_code == 201


def test_a_policy_preview_is_the_workers_timeline(api):
    body = {
        "retry_policy": {"max_retries": 3, "base_s": 1, "multiplier": 2, "jitter": "none"},
        "failed_at": "2030-01-01T00:00:00+01:00",
    }
    with api.client("viewer") as client:
        got = client.post("/api/admin/retry-policies/preview", json=body).json()
        tuned = client.post(
            "/api/admin/retry-policies/preview",
            json=body | {"error_class": "lock_contention"},
        ).json()
    assert got["failed_at"] == "2029-12-31T23:00:00Z"
    # the test ladder is 0.5 s, 1 s, 2 s and the global cap 3 s (tests/support/pipeline.py):
    # each wait hops through the largest tiers that fit
    assert [(a["attempt"], a["delay_s"], a["tiers"]) for a in got["attempts"]] == [
        (2, 1.0, [1.0]),
        (3, 2.0, [2.0]),
        (4, 3.0, [2.0, 1.0]),
    ]
    assert [a["at"] for a in got["attempts"]] == [
        "2029-12-31T23:00:01Z",
        "2029-12-31T23:00:03Z",
        "2029-12-31T23:00:06Z",
    ]
    # lock_contention's adjustment (base 0.5 s, cap 10 s, a 300 s budget) applies where
    # the schedule's own keys are silent: its base_s 1 and jitter none win, the cap rises
    # from the global 3 s to 10 s
    assert [a["delay_s"] for a in tuned["attempts"]] == [1.0, 2.0, 4.0]
    assert tuned["policy"]["cap_s"] == 10.0


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
_times = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),
    st.text(max_size=30),
)
_bodies = (
    st.fixed_dictionaries(
        {},
        optional={
            "updates": st.one_of(
                _json,
                st.fixed_dictionaries(
                    {},
                    optional={
                        "enabled": _json,
                        "rollout_percentage": st.integers(-1000, 1000) | _json,
                        "config": _json,
                    },
                ),
            ),
            "scheduled_at": _times,
            "priority": st.sampled_from(["normal", "critical", "", "x"]) | _json,
            "retry_policy": st.one_of(
                _json,
                st.fixed_dictionaries(
                    {},
                    optional={
                        "max_retries": st.integers(-5, 10**6) | _json,
                        "base_s": st.floats() | _json,
                        "multiplier": st.floats(),
                        "cap_s": st.floats(),
                        "floor_s": st.floats(),
                        "jitter": st.sampled_from(["none", "full", "equal", "decorrelated", "?"]),
                    },
                ),
            ),
            "max_retries": st.integers(-5, 10**6) | _json,
        },
    )
    | _json
)


@hsettings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=_bodies)
def test_fuzzed_creates_never_get_a_500(api, body):
    with api.client("operator") as client:
        try:
            got = client.post(_CREATE, json=body)
        except ValueError:  # not JSON-encodable (nan): send it raw, as a client might
            got = client.post(
                _CREATE, content=repr(body).encode(), headers={"content-type": "application/json"}
            )
    assert got.status_code in (201, 422), got.text
    if got.status_code == 422:
        assert got.headers["content-type"] == "application/problem+json"


_params = st.dictionaries(
    st.sampled_from(
        [
            "status",
            "flag_key",
            "flag_prefix",
            "priority",
            "error_class",
            "due_after",
            "due_before",
            "finished_after",
            "finished_before",
            "sort",
            "limit",
            "cursor",
            "other",
        ]
    ),
    st.text(max_size=40) | _times | st.integers().map(str),
    max_size=6,
)


@hsettings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(params=_params)
def test_fuzzed_lists_never_get_a_500(api, params):
    with api.client("viewer") as client:
        try:
            got = client.get("/api/admin/schedules", params=params)
        except httpx.InvalidURL:
            return
    assert got.status_code in (200, 422), got.text
