"""The one rule for a missing service or tool: skip on a developer machine, fail in CI.

In CI (``CI=true``) a missing Kafka, PostgreSQL, browser or checker is a failure, never
a skip (dramatiq's ``tests/conftest.py`` does the same).
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """Whether this run is CI's (``CI=true``)."""
    return os.environ.get("CI") == "true"


def unavailable(reason: str) -> NoReturn:
    """Fail the test when CI=true; skip it, saying so, anywhere else."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing service or tool fails the run)", pytrace=False)
    pytest.skip(f"{reason} (skipped because CI is not 'true'; in CI this fails the run)")
