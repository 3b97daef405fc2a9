"""Circuit breaker for database outages, and the drain limiter used after it closes.

CLOSED: infrastructure failures are counted; at ``threshold`` in a row it opens.
OPEN: every partition is paused, so no record is consumed, no attempt is burned
and nothing is dead-lettered because of the outage. Probes run on the backoff
of retry/policy.py (capped, jittered).
HALF_OPEN: one probe in flight; success closes, failure re-opens with a longer wait.

A breaker may also be opened by another worker through the control topic
(``remote``). Another worker's OPEN is a hint, not an order: this worker pauses
and probes on its own backoff like an opener, and closes on that worker's
CLOSED event or on its own successful probe, whichever comes first. After its
own probe has succeeded, it ignores remote OPENs for ``stale_s``: whoever can
write the control topic cannot keep it paused while the database answers it
(a real outage in that window is still found by its own failures).

The drain limiter runs after an outage this worker saw itself (its own failures
opened the breaker, or one of its probes failed): a hint whose first probe the
database answered was no outage here, so it ends without a drain, and a forged or
stale OPEN costs a pause of one probe, not ``drain_s`` of throttled consumption.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from flagsched.schemas.events import BreakerState
from flagsched.schemas.retry.policy import Jitter, RetryPolicy, backoff_s, seed_for

Clock = Callable[[], float]


@dataclass(frozen=True)
class BreakerConfig:
    """Thresholds and timings, from settings."""

    threshold: int = 3
    probe_base_s: float = 0.5
    probe_cap_s: float = 10.0
    stale_s: float = 60.0
    drain_rate_per_s: float = 200.0
    drain_s: float = 10.0


class Breaker:
    """The state machine; pure apart from the clock."""

    def __init__(self, config: BreakerConfig, *, seed: int = 0, clock: Clock = time.monotonic):
        self.config = config
        self.state = BreakerState.CLOSED
        self.remote = False
        self.opened_at: float | None = None
        self._clock = clock
        self._seed = seed
        self._failures = 0
        self._probes = 0
        self._next_probe = 0.0
        self._answered_at: float | None = None  # this worker's last successful probe
        self._witnessed = False  # this worker saw the current outage itself
        #: Whether the last open period was an outage this worker saw (see the module doc).
        self.closed_after_outage = False
        self._probe_policy = RetryPolicy(
            max_retries=0,
            base_s=min(config.probe_base_s, config.probe_cap_s),  # the model rejects base > cap
            multiplier=2.0,
            cap_s=config.probe_cap_s,
            floor_s=min(config.probe_base_s, config.probe_cap_s) / 2,
            jitter=Jitter.FULL,
        )

    @property
    def is_open(self) -> bool:
        """True while records must not be consumed."""
        return self.state is not BreakerState.CLOSED

    def record_failure(self) -> bool:
        """An infrastructure failure; True when this one opened the breaker."""
        if self.is_open:
            return False
        self._failures += 1
        if self._failures >= self.config.threshold:
            self._open(remote=False)
            return True
        return False

    def record_success(self) -> None:
        """A database round trip worked; consecutive failures start over."""
        if not self.is_open:
            self._failures = 0

    def open_remote(self) -> bool:
        """Another worker opened the group's breaker; True if this one opened now.

        Ignored within ``stale_s`` of this worker's own successful probe.
        """
        if self.is_open:
            return False
        answered = self._answered_at
        if answered is not None and self._clock() - answered < self.config.stale_s:
            return False
        self._open(remote=True)
        return True

    def close_remote(self) -> bool:
        """Another worker closed it; True if this breaker closed now."""
        if self.is_open:
            self._close()
            return True
        return False

    def probe_due(self) -> bool:
        """Whether to send the single half-open probe now."""
        if not self.is_open or self.state is BreakerState.HALF_OPEN:
            return False
        if self._clock() >= self._next_probe:
            self.state = BreakerState.HALF_OPEN
            return True
        return False

    def probe_result(self, ok: bool) -> None:
        """The outcome of the half-open probe."""
        if ok:
            self._answered_at = self._clock()
            self._close()
            return
        self.state = BreakerState.OPEN
        self._witnessed = True
        self._schedule_probe()

    def _open(self, *, remote: bool) -> None:
        self.state = BreakerState.OPEN
        self.remote = remote
        self._witnessed = not remote
        self.opened_at = self._clock()
        self._probes = 0
        self._schedule_probe()

    def _close(self) -> None:
        self.closed_after_outage = self._witnessed
        self._witnessed = False
        self.state = BreakerState.CLOSED
        self.remote = False
        self.opened_at = None
        self._failures = 0

    def _schedule_probe(self) -> None:
        self._probes += 1
        delay = backoff_s(self._probe_policy, self._probes, seed_for(self._seed, self._probes))
        self._next_probe = self._clock() + delay

    def seconds_to_probe(self) -> float | None:
        """How long until the next probe, for the poll timeout."""
        if self.state is not BreakerState.OPEN:
            return None
        return max(0.0, self._next_probe - self._clock())


class DrainLimiter:
    """After the breaker closes: at most ``rate`` records a second for ``duration_s``,
    so a recovering database is not flattened by the whole backlog at once."""

    def __init__(self, rate_per_s: float, duration_s: float, *, clock: Clock = time.monotonic):
        self._rate = rate_per_s
        self._duration = duration_s
        self._clock = clock
        self._until = 0.0
        self._tokens = 0.0
        self._last = 0.0

    def start(self) -> None:
        """Begin a drain period."""
        now = self._clock()
        self._until, self._tokens, self._last = now + self._duration, 0.0, now

    def budget(self) -> int | None:
        """Records the next poll may take; None when not limiting."""
        now = self._clock()
        if now >= self._until:
            return None
        self._tokens = min(self._rate, self._tokens + (now - self._last) * self._rate)
        self._last = now
        return int(self._tokens)

    def wait_s(self) -> float:
        """Time until the next record may be taken (0 when one may be taken now)."""
        return max(0.0, (1.0 - self._tokens) / self._rate)

    def spend(self, n: int) -> None:
        """Account for ``n`` records taken."""
        self._tokens = max(0.0, self._tokens - n)
