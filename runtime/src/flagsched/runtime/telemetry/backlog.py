"""The retry backlog, read from PostgreSQL (the truth, shared by every worker).

:func:`read_backlog` counts schedules in status ``retrying`` by where their next
attempt stands now: ``overdue`` (its time has passed), ``hold`` (due sooner than the
smallest tier), or the delay tier that the time left maps to (the largest tier not
above it, as the worker picks), plus the age of the oldest overdue retry and the
schedules due but not yet dispatched. Both queries are range scans of existing
indexes: ``(status, next_retry_at, retry_count)`` and the partial pending index.

:class:`BacklogCollector` runs it at scrape time on a short-lived connection with
bounded connect and statement timeouts; a failure is counted in
``flagsched_backlog_scrape_errors_total`` and never fails the scrape.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg.rows import dict_row

log = logging.getLogger(__name__)

RETRYING_SQL = """
SELECT width_bucket(EXTRACT(EPOCH FROM next_retry_at - now())::float8, %(bounds)s::float8[])
           AS bucket,
       count(*) AS n,
       EXTRACT(EPOCH FROM now() - min(next_retry_at))::float8 AS oldest_s
  FROM flag_schedules
 WHERE status = 'retrying'
 GROUP BY 1
"""
PENDING_DUE_SQL = """
SELECT count(*) AS n, EXTRACT(EPOCH FROM now() - min(scheduled_at))::float8 AS oldest_s
  FROM flag_schedules
 WHERE status = 'pending' AND scheduled_at <= now()
"""


def backlog_labels(tiers_s: Sequence[float]) -> list[str]:
    """Every ``tier`` label value of the backlog, in order: overdue, hold, each tier
    (its seconds, as in :meth:`flagsched.schemas.topics.TopicLayout.tier_label`), none."""
    return ["overdue", "hold", *(f"{t:g}" for t in sorted(tiers_s)), "none"]


@dataclass(frozen=True)
class BacklogSnapshot:
    """The backlog at one moment. ``by_tier`` has every label of :func:`backlog_labels`."""

    by_tier: dict[str, int] = field(default_factory=dict)
    oldest_overdue_s: float = 0.0  # 0 when nothing is overdue
    dispatch_backlog: int = 0  # pending schedules already due
    oldest_dispatch_s: float = 0.0

    @property
    def retrying(self) -> int:
        """Schedules in status ``retrying``."""
        return sum(self.by_tier.values())


def read_backlog(conn: psycopg.Connection[Any], tiers_s: Sequence[float]) -> BacklogSnapshot:
    """Count the backlog with two index range scans (see the module docstring)."""
    tiers = sorted(tiers_s)
    labels = backlog_labels(tiers)
    # width_bucket: < 0 -> 0 (overdue), [0, t1) -> 1 (hold), [t_i, t_i+1) -> i + 1, NULL -> NULL
    bounds = [0.0, *tiers]
    by_tier = dict.fromkeys(labels, 0)
    oldest_overdue = 0.0
    with conn.cursor(row_factory=dict_row) as cur:
        for row in cur.execute(RETRYING_SQL, {"bounds": bounds}).fetchall():
            bucket = row["bucket"]
            label = "none" if bucket is None else labels[int(bucket)]
            by_tier[label] += int(row["n"])
            if bucket == 0:
                oldest_overdue = max(0.0, float(row["oldest_s"]))
        pending = cur.execute(PENDING_DUE_SQL).fetchone()
    assert pending is not None
    return BacklogSnapshot(
        by_tier=by_tier,
        oldest_overdue_s=oldest_overdue,
        dispatch_backlog=int(pending["n"]),
        oldest_dispatch_s=max(0.0, float(pending["oldest_s"] or 0.0)),
    )


class BacklogCollector(Collector):
    """Scrape-time collector of :func:`read_backlog` (register it on a Metrics registry).

    Each refresh opens a connection (``timeout_s`` bounds connecting and each query) and
    closes it, so nothing stays open while the database is down. Results are reused for
    ``min_interval_s`` so several scrapers do not multiply queries. On failure only
    ``flagsched_backlog_up 0`` and the error counter are exported.
    """

    def __init__(
        self,
        dsn: str,
        tiers_s: Sequence[float],
        *,
        timeout_s: float = 2.0,
        min_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dsn = dsn
        self._tiers = tuple(sorted(tiers_s))
        self._timeout_s = timeout_s
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, BacklogSnapshot] | None = None
        self._errors = 0
        self._failing = False
        self._duration_s = 0.0

    def register(self, registry: CollectorRegistry) -> BacklogCollector:
        """Register on ``registry``; returns self."""
        registry.register(self)
        return self

    def describe(self) -> Iterable[Metric]:
        """The families, without querying the database."""
        return self._families(None, samples=False)

    def collect(self) -> Iterable[Metric]:
        """Query (or reuse a fresh result) and export; never raises."""
        with self._lock:
            snapshot = self._refresh()
        return self._families(snapshot, samples=True)

    def _refresh(self) -> BacklogSnapshot | None:
        now = self._clock()
        if self._cached is not None and now - self._cached[0] < self._min_interval_s:
            return self._cached[1]
        started = time.monotonic()
        try:
            with psycopg.connect(
                self._dsn,
                autocommit=True,
                connect_timeout=max(2, math.ceil(self._timeout_s)),
                options=f"-c statement_timeout={int(self._timeout_s * 1000)}",
                application_name="flagsched-metrics",
            ) as conn:
                snapshot = read_backlog(conn, self._tiers)
        except (psycopg.Error, OSError) as exc:
            self._errors += 1
            self._cached = None
            if not self._failing:
                log.warning("backlog scrape failed (reported until it recovers): %s", exc)
            self._failing = True
            return None
        finally:
            self._duration_s = time.monotonic() - started
        if self._failing:
            log.info("backlog scrape recovered")
        self._failing = False
        self._cached = (now, snapshot)
        return snapshot

    def _families(self, snap: BacklogSnapshot | None, *, samples: bool) -> list[Metric]:
        up = GaugeMetricFamily(
            "flagsched_backlog_up", "1 when the last backlog query succeeded, else 0"
        )
        errors = CounterMetricFamily(
            "flagsched_backlog_scrape_errors", "Backlog queries that failed (database down, slow)"
        )
        took = GaugeMetricFamily(
            "flagsched_backlog_scrape_duration_seconds", "Time the last backlog query took"
        )
        by_tier = GaugeMetricFamily(
            "flagsched_retry_backlog_schedules",
            "Schedules retrying, by where the next attempt stands: overdue, hold, or the "
            "delay tier of the time left",
            labels=["tier"],
        )
        overdue = GaugeMetricFamily(
            "flagsched_retry_backlog_oldest_overdue_seconds",
            "Age of the oldest retry past its time (0 when none)",
        )
        pending = GaugeMetricFamily(
            "flagsched_dispatch_backlog_schedules", "Pending schedules already due"
        )
        pending_age = GaugeMetricFamily(
            "flagsched_dispatch_backlog_oldest_seconds",
            "Age of the oldest due schedule not yet dispatched (0 when none)",
        )
        families: list[Metric] = [up, errors, took, by_tier, overdue, pending, pending_age]
        if not samples:
            return families
        up.add_metric([], 0.0 if snap is None else 1.0)
        errors.add_metric([], float(self._errors))
        took.add_metric([], self._duration_s)
        if snap is None:
            return [up, errors, took]
        for tier, count in snap.by_tier.items():
            by_tier.add_metric([tier], float(count))
        overdue.add_metric([], snap.oldest_overdue_s)
        pending.add_metric([], float(snap.dispatch_backlog))
        pending_age.add_metric([], snap.oldest_dispatch_s)
        return families
