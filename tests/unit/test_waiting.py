"""Start-up waits: jittered per process, so workers restarted together do not retry in
lockstep."""

from __future__ import annotations

import logging

import pytest

from flagsched.runtime.errors import ServiceUnavailable
from flagsched.runtime.waiting import process_seed, wait_for
from flagsched.schemas.retry.policy import Jitter, RetryPolicy

FAST = RetryPolicy(
    max_retries=0, base_s=0.001, multiplier=2.0, cap_s=0.004, floor_s=0.0, jitter=Jitter.FULL
)


def _waits(caplog: pytest.LogCaptureFixture, seed: int | None, tries: int = 4) -> list[float]:
    caplog.clear()
    calls = iter(range(tries))

    def connect() -> str:
        if next(calls) < tries - 1:
            raise ServiceUnavailable("not yet")
        return "up"

    with caplog.at_level(logging.WARNING, logger="flagsched.runtime.waiting"):
        assert wait_for(connect, what="test", deadline_s=10, policy=FAST, seed=seed) == "up"
    # The log line's third argument is tenacity's upcoming sleep, unrounded.
    return [float(r.args[2]) for r in caplog.records]  # type: ignore[index,arg-type]


def test_default_seeds_differ_between_waits(caplog: pytest.LogCaptureFixture) -> None:
    first, second = _waits(caplog, None), _waits(caplog, None)
    assert len(first) == len(second) == 3
    assert first != second


def test_a_given_seed_repeats(caplog: pytest.LogCaptureFixture) -> None:
    assert _waits(caplog, 42) == _waits(caplog, 42)


def test_process_seeds_are_not_a_constant() -> None:
    seeds = {process_seed() for _ in range(20)}
    assert len(seeds) == 20
    assert all(0 <= s < 2**63 for s in seeds)
