"""The admin UI's pure parts: filters survive the URL round trip (Hypothesis), bad
filters name their field, no open redirect after login, the Origin rule, the chart's
geometry, and autoescape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from flagsched.admin.service.bulk_models import ScheduleSelection
from flagsched.admin.service.overview import STATUSES, Minute
from flagsched.admin.settings import AdminSettings
from flagsched.admin.ui import filters
from flagsched.admin.ui.chart import HEIGHT, PAD_BOTTOM, PAD_TOP, per_minute_chart
from flagsched.admin.ui.deps import safe_next
from flagsched.admin.ui.render import environment
from flagsched.admin.ui.security import origin_allowed

_KEY = st.from_regex(r"^[A-Za-z0-9._:-]{1,30}$", fullmatch=True)
_MINUTE = st.datetimes(
    min_value=datetime(2020, 1, 1),  # noqa: DTZ001 (hypothesis bounds are naive; zone below)
    max_value=datetime(2035, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
).map(lambda d: d.replace(second=0, microsecond=0))


@given(
    status=st.lists(st.sampled_from(STATUSES), unique=True),
    key=st.none() | _KEY,
    prefix=st.none() | _KEY,
    priority=st.none() | st.sampled_from(["normal", "critical"]),
    error_class=st.none() | st.sampled_from(["lock_contention", "a&b=c d"]),
    after=st.none() | _MINUTE,
)
def test_a_filter_survives_the_url_and_the_form(status, key, prefix, priority, error_class, after):
    sel = ScheduleSelection(
        status=status,
        flag_key=key,
        flag_prefix=prefix,
        priority=priority,
        error_class=error_class,
        due_after=after,
    )
    parsed, errors = filters.parse(parse_qs(filters.query(sel)))
    assert errors == {} and parsed == sel
    # what the form shows (datetime-local, UTC) parses back to the same filter
    shown = {name: [filters.form_value(sel, name)] for name in filters.FIELDS if name != "status"}
    again, _ = filters.parse(shown | {"status": list(status)})
    assert again == sel


def test_bad_filters_name_their_fields():
    _, errors = filters.parse(
        {"status": ["retrying", "bogus"], "due_before": ["tomorrow"], "flag_prefix": ["a b"]}
    )
    assert set(errors) == {"status", "due_before", "flag_prefix"}


@pytest.mark.parametrize(
    ("given_next", "expected"),
    [
        ("/ui/schedules?status=dead", "/ui/schedules?status=dead"),
        ("//evil.example/ui", "/ui/"),
        ("https://evil.example/ui", "/ui/"),
        ("/ui\\@evil.example", "/ui/"),
        ("/api/admin/schedules", "/ui/"),
        (None, "/ui/"),
    ],
)
def test_after_login_only_a_ui_path_is_followed(given_next, expected):
    assert safe_next(given_next) == expected


def _request(headers: dict[str, str], scheme: str = "http") -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request(
        {"type": "http", "method": "POST", "scheme": scheme, "headers": raw, "path": "/ui/x"}
    )


@pytest.mark.parametrize(
    ("headers", "origins", "allowed"),
    [
        ({"host": "127.0.0.1:8080", "origin": "http://127.0.0.1:8080"}, (), True),
        ({"host": "127.0.0.1:8080", "origin": "http://127.0.0.1:9999"}, (), False),
        ({"host": "127.0.0.1:8080", "origin": "https://evil.example"}, (), False),
        ({"host": "127.0.0.1:8080", "origin": "null"}, (), False),
        ({"host": "127.0.0.1:8080"}, (), False),
        ({"host": "127.0.0.1:8080", "referer": "http://127.0.0.1:8080/ui/schedules"}, (), True),
        (
            {"host": "internal:8080", "origin": "https://admin.example"},
            ("https://admin.example",),
            True,
        ),
        (
            {"host": "internal:8080", "origin": "http://internal:8080"},
            ("https://admin.example",),
            False,
        ),
    ],
)
def test_an_unsafe_request_must_come_from_the_ui_itself(headers, origins, allowed):
    settings = AdminSettings(admin_ui_origins=origins)
    assert origin_allowed(_request(headers), settings) is allowed


def test_the_chart_draws_every_minute_inside_its_frame():
    start = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    minutes = [Minute(start + timedelta(minutes=i), i % 7, (i * 3) % 5) for i in range(60)]
    svg = str(per_minute_chart(minutes))
    for cls in ("applied", "failed"):
        points = svg.split(f'class="{cls}" points="')[1].split('"')[0].split()
        assert len(points) == 60
        ys = [float(p.split(",")[1]) for p in points]
        assert all(PAD_TOP <= y <= HEIGHT - PAD_BOTTOM for y in ys)
    assert "174 applied, 120 failed" in svg
    assert "style=" not in svg  # the CSP allows no inline style


def test_templates_escape_what_they_are_given():
    out = environment().from_string("{{ x }}").render(x='<script>alert("x")</script>')
    assert out == "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"


@pytest.mark.parametrize("allowed", [True, False])
def test_the_action_button_macro_carries_the_csrf_token_and_hides_from_a_lower_role(allowed):
    template = environment().from_string(
        '{% import "macros.html" as ui with context %}'
        '{{ ui.action_button("/ui/x", "Cancel", "schedules.cancel",'
        ' hidden={"a": "<1>", "b": ["2", "3"]}, confirm="Cancel \\"it\\"?") }}'
    )
    html = template.render(can=lambda action: allowed, csrf_token="tok&en")
    if not allowed:
        assert html.strip() == ""
        return
    assert 'name="csrf_token" value="tok&amp;en"' in html
    assert 'name="a" value="&lt;1&gt;"' in html
    assert html.count('name="b"') == 2
    assert 'data-confirm="Cancel &#34;it&#34;?"' in html
    assert 'data-action="schedules.cancel"' in html
