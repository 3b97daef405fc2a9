"""Fixtures of the browser tests: the REAL admin app under uvicorn on loopback over the
real Kafka and PostgreSQL (a fresh database and topics per test, as in
tests/integration), a headless system Chromium, and logging in as a role.

``browser``: a Selenium Chrome driver. ``admin_ui``: the running admin server
(:class:`tests.support.admin.AdminApi`: ``.url``, ``.tokens[role]``). ``login_as``:
``login_as("viewer")`` logs the browser in through the login form. ``pipeline``: a
dispatcher and a worker on the test's topics, for tests that need attempts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from flagsched.runtime.settings import Settings
from tests.support.admin import AdminApi, running_admin
from tests.support.browser import chrome, login
from tests.support.pipeline import running_dispatcher, running_worker

pytestmark = pytest.mark.integration


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """A headless system Chromium (missing: skip locally, fail under CI=true)."""
    with chrome() as driver:
        yield driver


@pytest.fixture
def admin_ui(
    request: pytest.FixtureRequest, browser: WebDriver, settings: Settings, tmp_path: Path
) -> Iterator[AdminApi]:
    """The admin server (API and UI) of this test's settings, a token per role;
    ``@pytest.mark.admin_settings(admin_bulk_batch=20)`` overrides admin settings."""
    marker = request.node.get_closest_marker("admin_settings")
    with running_admin(settings, tmp_path, **(marker.kwargs if marker else {})) as api:
        yield api


@pytest.fixture
def login_as(browser: WebDriver, admin_ui: AdminApi) -> Callable[[str], None]:
    """Log the browser in with the token of a role."""

    def go(role: str) -> None:
        login(browser, admin_ui.url, admin_ui.tokens[role])

    return go


@pytest.fixture
def pipeline(settings: Settings) -> Iterator[Any]:
    """A dispatcher and a worker consuming this test's topics."""
    with running_dispatcher(settings), running_worker(settings) as worker:
        yield worker
