"""Waiting for a service at start-up: tenacity runs the loop, retry/policy.py the maths.

A worker or dispatcher started before Kafka or PostgreSQL is ready waits with
capped, jittered backoff and says so on every try, naming the setting; after
``deadline_s`` it gives up with ServiceUnavailable instead of crash-looping
silently.

The jitter is seeded per call with a random seed (:func:`process_seed`), so workers
restarted together do not retry in lockstep against the service they wait for.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    stop_when_event_set,
)

from flagsched.runtime.errors import ServiceUnavailable
from flagsched.schemas.retry.policy import Jitter, RetryPolicy, backoff_s, seed_for

log = logging.getLogger(__name__)
T = TypeVar("T")

STARTUP_POLICY = RetryPolicy(
    max_retries=0, base_s=0.5, multiplier=2.0, cap_s=10.0, floor_s=0.25, jitter=Jitter.EQUAL
)


def process_seed() -> int:
    """A fresh random 63-bit seed: different in every process (and every call)."""
    return int.from_bytes(os.urandom(8), "big") >> 1


def wait_for(
    connect: Callable[[], T],
    *,
    what: str,
    deadline_s: float,
    stop: threading.Event | None = None,
    policy: RetryPolicy = STARTUP_POLICY,
    seed: int | None = None,
) -> T:
    """Call ``connect`` until it stops raising ServiceUnavailable, the deadline passes,
    or ``stop`` is set (SIGTERM while waiting ends the wait at once).  ``seed`` fixes
    the jitter (tests); by default each call draws its own (:func:`process_seed`)."""
    stop = stop or threading.Event()
    salt = process_seed() if seed is None else seed

    def wait(state: RetryCallState) -> float:
        return backoff_s(policy, state.attempt_number, seed_for(salt, state.attempt_number))

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "waiting for %s (try %d, next in %.1fs): %s",
            what,
            state.attempt_number,
            state.upcoming_sleep,
            exc,
        )

    retrying = Retrying(
        retry=retry_if_exception_type(ServiceUnavailable),
        wait=wait,
        stop=stop_after_delay(deadline_s) | stop_when_event_set(stop),
        sleep=lambda seconds: _interruptible_sleep(stop, seconds),
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(connect)


def _interruptible_sleep(stop: threading.Event, seconds: float) -> None:
    # Event.wait instead of time.sleep: SIGTERM during a start-up wait ends it at once.
    stop.wait(seconds)
