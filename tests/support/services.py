"""Pytest plugin: the Kafka and PostgreSQL the integration tests talk to.

With ``FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS`` and ``FLAGSCHED_DATABASE_URL`` both
set, those services are used and nothing is started. Otherwise one local dev
stack is started for the session in a temp run directory (sharing the jar
cache under ``FLAGSCHED_DEV_HOME``), or containers with
``FLAGSCHED_DEV_BACKEND=testcontainers``, and stopped at the end. A stack that
cannot start skips the tests on a developer machine but fails the run when
``CI=true``: in CI a missing service is a failure, never a skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NoReturn

import pytest

from flagsched.devstack import DevStack, Endpoints, Stack
from flagsched.devstack.containers import ContainerStack
from flagsched.devstack.endpoints import DATABASE_ENV, KAFKA_ENV
from flagsched.runtime.errors import FlagschedError
from flagsched.runtime.settings import load_settings
from tests.support.required import unavailable

ServiceStack = tuple[Endpoints, DevStack | None]


def _unavailable(reason: str) -> NoReturn:
    unavailable(f"{reason}; or point {KAFKA_ENV} and {DATABASE_ENV} at running services")


def need_local_stack(devstack: DevStack | None) -> None:
    """Fault tests stop and start the servers, so they need the local dev stack; with
    external services they skip on a developer machine and fail the run when CI=true."""
    if devstack is None:
        _unavailable(
            "stopping and starting servers needs the local dev stack;"
            " the services are external here"
        )


@pytest.fixture(scope="session")
def _service_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    kafka, database = os.environ.get(KAFKA_ENV), os.environ.get(DATABASE_ENV)
    if kafka and database:
        yield Endpoints(kafka, database), None
        return
    stack: Stack
    try:
        settings = load_settings()
        if settings.dev_backend == "testcontainers":
            stack = ContainerStack()
        else:
            stack = DevStack(tmp_path_factory.mktemp("devstack"), settings.dev_home)
        endpoints = stack.up()
    except (FlagschedError, OSError) as exc:
        _unavailable(f"the dev stack could not start: {exc}")
    try:
        yield endpoints, stack if isinstance(stack, DevStack) else None
    finally:
        stack.down()


@pytest.fixture(scope="session")
def services(_service_stack: ServiceStack) -> Endpoints:
    """Where Kafka and PostgreSQL are for this test session."""
    return _service_stack[0]


@pytest.fixture(scope="session")
def devstack(_service_stack: ServiceStack) -> DevStack | None:
    """The session's DevStack, for fault tests that stop and start the servers.

    None when the services are external (given by environment variables).
    """
    return _service_stack[1]
