"""What every benchmark gets (:class:`Context`) and gives back (:class:`Result`, rows)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import Services

log = logging.getLogger("bench")


@dataclass
class Row:
    """One line of the results table.

    ``target`` is text (e.g. ``>= 10x``); ``met`` is None when there is no target, and
    ``gap`` says by how much a missed target was missed.
    """

    benchmark: str
    metric: str
    value: float | None
    unit: str
    target: str = ""
    met: bool | None = None
    gap: str = ""
    note: str = ""


@dataclass
class Result:
    """A benchmark's rows, raw figures and notes."""

    name: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    def row(self, metric: str, value: float | None, unit: str, **kw: Any) -> Row:
        r = Row(self.name, metric, None if value is None else round(value, 3), unit, **kw)
        self.rows.append(r)
        return r

    def at_least(
        self, metric: str, value: float | None, unit: str, floor: float, target: str, note: str = ""
    ) -> Row:
        """A row whose value should be >= ``floor``."""
        if value is None:
            return self.row(
                metric, None, unit, target=target, met=False, gap="not measured", note=note
            )
        met = value >= floor
        gap = (
            ""
            if met
            else f"missed: {value / floor:.2f}x the target ({1 - value / floor:.0%} short)"
        )
        return self.row(metric, value, unit, target=target, met=met, gap=gap, note=note)

    def at_most(
        self,
        metric: str,
        value: float | None,
        unit: str,
        ceiling: float,
        target: str,
        note: str = "",
    ) -> Row:
        """A row whose value should be <= ``ceiling``."""
        if value is None:
            return self.row(
                metric, None, unit, target=target, met=False, gap="not measured", note=note
            )
        met = value <= ceiling
        gap = "" if met else f"missed: {value / ceiling:.2f}x the limit"
        return self.row(metric, value, unit, target=target, met=met, gap=gap, note=note)


@dataclass(frozen=True)
class Sizes:
    """Workload sizes of the full suite, and of ``--quick`` (development, smoke runs)."""

    quick: bool

    def pick(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full

    @property
    def drain_n(self) -> int:
        """Schedules in the throughput backlog (and the MVP/procrastinate backlogs)."""
        return int(self.pick(20_000, 3_000))

    @property
    def burst_n(self) -> int:
        return int(self.pick(100_000, 5_000))

    @property
    def mvp_burst_n(self) -> int:
        """The MVP's burst is smaller and extrapolated (it applies one row at a time)."""
        return int(self.pick(10_000, 1_000))

    @property
    def steady_rate_per_s(self) -> float:
        return float(self.pick(100.0, 50.0))

    @property
    def steady_s(self) -> float:
        return float(self.pick(20.0, 8.0))

    @property
    def steady_flags(self) -> int:
        return int(self.pick(200, 100))

    @property
    def punctuality_s(self) -> float:
        return float(self.pick(30.0, 10.0))

    @property
    def critical_every_s(self) -> float:
        return float(self.pick(0.25, 0.1))


@dataclass
class Context:
    """The services, where raw files go, the sizes, and a memo shared between benchmarks."""

    services: Services
    raw_dir: Path
    sizes: Sizes
    profile: bool = False
    memo: dict[Any, Any] = field(default_factory=dict)

    @property
    def quick(self) -> bool:
        return self.sizes.quick

    def once(self, key: Any, make: Callable[[], Any]) -> Any:
        """``make()`` the first time ``key`` is asked for, the same value after.

        Lets two benchmarks that need the same measurement share one run of it.
        """
        if key not in self.memo:
            started = time.monotonic()
            self.memo[key] = make()
            log.info("%s measured in %.1fs", key, time.monotonic() - started)
        return self.memo[key]
