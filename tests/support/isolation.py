"""Pytest plugin: per-test isolation for the integration and browser tests. Each test
gets its own database (from a migrated template), its own topic prefix and consumer
group (fixtures ``template``, ``dsn``, ``make_settings``, ``settings``, ``db``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from flagsched.runtime.settings import Settings
from tests.support.pipeline import (
    connect,
    drop_template,
    fresh_database,
    make_template,
    setup_topics,
    test_settings,
)


@pytest.fixture(scope="session")
def template(services: Any) -> Iterator[Any]:
    make_template(services.database_url)
    yield services
    drop_template(services.database_url)


@pytest.fixture
def dsn(template: Any) -> str:
    return fresh_database(template.database_url)


@pytest.fixture
def make_settings(template: Any, dsn: str) -> Any:
    """Settings for this test, with overrides; topics are created."""

    def make(**overrides: Any) -> Settings:
        settings = test_settings(template.kafka_bootstrap_servers, dsn, **overrides)
        setup_topics(settings)
        return settings

    return make


@pytest.fixture
def settings(make_settings: Any) -> Settings:
    return make_settings()  # type: ignore[no-any-return]


@pytest.fixture
def db(dsn: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    conn = connect(dsn)
    yield conn
    conn.close()
    # Never early, whatever the test did: every recorded attempt started at or after its
    # due time. (A fresh connection: fault tests restart the server under the first one.)
    with connect(dsn) as check:
        early = check.execute(
            "SELECT schedule_id, attempt, lateness_ms FROM schedule_retry_attempts"
            " WHERE lateness_ms < 0"
        ).fetchall()
        backwards = check.execute(
            "SELECT schedule_id, attempt, started_at, finished_at FROM schedule_retry_attempts"
            " WHERE finished_at < started_at"
        ).fetchall()
    assert not early, f"attempts processed before their due time: {early}"
    # One clock (the worker's) for both ends of an attempt.
    assert not backwards, f"attempts that finished before they started: {backwards}"
