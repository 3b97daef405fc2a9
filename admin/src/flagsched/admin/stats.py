"""``flagsched stats``: what failed and why, how often retries pay off, what waits now.

Reads ``schedule_retry_attempts`` over a time window (range scans of its
``finished_at`` index) and the current backlog (:mod:`flagsched.runtime.telemetry.backlog`).
Failure messages are grouped by a fingerprint with the variable parts (numbers, ids,
quoted values, hex) replaced, so "flag 'a' does not exist" and "flag 'b' does not
exist" are one row.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from flagsched.admin.experiments import (
    MAX_BOOTSTRAP_DRAWS,
    MAX_RESAMPLES,
    MAX_SEED,
    MIN_RESAMPLES,
    ExperimentError,
    experiment_report,
    render_report,
)
from flagsched.runtime.errors import ConfigError
from flagsched.runtime.settings import Settings
from flagsched.runtime.telemetry.backlog import BacklogSnapshot, read_backlog
from flagsched.runtime.telemetry.fingerprint import fingerprint

log = logging.getLogger(__name__)

DEFAULT_TIERS_S: tuple[float, ...] = Settings.model_fields["retry_tiers_s"].default
#: Share of eventually-applied schedules the max_retries suggestion must cover.
TARGET = 0.99

_FAILURES = """
SELECT error_class, error_message, schedule_id, count(*) AS n,
       count(*) FILTER (WHERE outcome = 'dead') AS dead, max(finished_at) AS last_seen
  FROM schedule_retry_attempts
 WHERE error_class IS NOT NULL AND finished_at >= %(since)s AND finished_at < %(until)s
 GROUP BY error_class, error_message, schedule_id
"""
_ENDINGS = """
SELECT attempt, count(*) FILTER (WHERE outcome = 'applied') AS applied,
       count(*) FILTER (WHERE dlt_reason = 'exhausted') AS exhausted
  FROM schedule_retry_attempts
 WHERE finished_at >= %(since)s AND finished_at < %(until)s
   AND (outcome = 'applied' OR dlt_reason = 'exhausted')
 GROUP BY attempt ORDER BY attempt
"""
_TRIES = """
SELECT attempt, count(*) AS finished, count(*) FILTER (WHERE outcome = 'applied') AS applied
  FROM schedule_retry_attempts
 WHERE finished_at >= %(since)s AND finished_at < %(until)s
   AND outcome IN ('applied', 'retry', 'dead')
 GROUP BY attempt ORDER BY attempt
"""


@dataclass(frozen=True)
class FailureGroup:
    """Failed attempts of one error class whose messages share a fingerprint."""

    error_class: str
    fingerprint: str
    attempts: int
    schedules: int
    dead: int  # of those attempts, how many dead-lettered the schedule
    example: str
    last_seen: datetime


@dataclass(frozen=True)
class AttemptShare:
    """Schedules applied on one attempt number, as a share of all applied."""

    attempt: int
    applied: int
    share: float
    cumulative: float


@dataclass(frozen=True)
class AttemptRate:
    """How often attempt number ``attempt`` succeeded when it ran: of the attempts with
    that number that applied, failed or dead-lettered (cancelled and superseded ones
    are not tries), the share that applied."""

    attempt: int
    finished: int
    applied: int
    rate: float


@dataclass(frozen=True)
class RetrySuggestion:
    """The smallest ``attempts`` within which ``target`` of the schedules that ended by
    being applied *or exhausted* were applied; ``max_retries = attempts - 1``.

    Exhausted schedules count in the sample as not applied within any attempt number they
    reached. When more than ``1 - target`` of the sample was exhausted no observed number
    is enough: then ``lower_bound`` is set and ``attempts`` is one more than the most
    attempts an exhausted schedule had (they needed at least that many; how many more is
    unknown)."""

    attempts: int
    max_retries: int
    target: float
    sample_size: int
    exhausted: int = 0
    lower_bound: bool = False


def suggest_max_retries(
    applied_by_attempt: Sequence[tuple[int, int]],
    exhausted_by_attempt: Sequence[tuple[int, int]],
    target: float = TARGET,
) -> RetrySuggestion | None:
    """The suggestion from ``(attempt, schedules)`` counts of schedules applied on and
    exhausted at each attempt number (``None``: an empty sample)."""
    applied = sum(n for _, n in applied_by_attempt)
    exhausted = sum(n for _, n in exhausted_by_attempt)
    total = applied + exhausted
    if total == 0:
        return None
    cumulative = 0
    for attempt, n in sorted(applied_by_attempt):
        cumulative += n
        if cumulative / total >= target - 1e-12:
            return RetrySuggestion(attempt, attempt - 1, target, total, exhausted)
    most = max((a for a, n in exhausted_by_attempt if n), default=0) + 1
    return RetrySuggestion(most, most - 1, target, total, exhausted, lower_bound=True)


@dataclass(frozen=True)
class Stats:
    """The result of :func:`failure_stats`."""

    since: datetime
    until: datetime
    failures: tuple[FailureGroup, ...]
    applied_by_attempt: tuple[AttemptShare, ...]
    success_by_attempt: tuple[AttemptRate, ...]
    applied: int
    exhausted: int
    suggestion: RetrySuggestion | None
    backlog: BacklogSnapshot

    @property
    def first_attempt_share(self) -> float | None:
        """Share of applied schedules that succeeded on attempt 1 (None: none applied)."""
        first = next((a for a in self.applied_by_attempt if a.attempt == 1), None)
        return None if not self.applied else (first.share if first else 0.0)

    def to_json(self) -> str:
        """All fields as JSON (times in ISO 8601)."""
        data = asdict(self) | {"first_attempt_share": self.first_attempt_share}
        return json.dumps(data, default=str, indent=2)


def failure_stats(
    conn: psycopg.Connection[Any],
    since: datetime,
    until: datetime,
    *,
    tiers_s: Sequence[float] = DEFAULT_TIERS_S,
    target: float = TARGET,
) -> Stats:
    """Failures, success by attempt number and a max_retries suggestion for attempts
    finished in ``[since, until)``, plus the backlog now (bucketed by ``tiers_s``)."""
    window = {"since": since, "until": until}
    with conn.cursor(row_factory=dict_row) as cur:
        failure_rows = cur.execute(_FAILURES, window).fetchall()
        endings = cur.execute(_ENDINGS, window).fetchall()
        tries = cur.execute(_TRIES, window).fetchall()
    applied_by = [(int(r["attempt"]), int(r["applied"])) for r in endings if r["applied"]]
    exhausted_by = [(int(r["attempt"]), int(r["exhausted"])) for r in endings if r["exhausted"]]
    applied = sum(n for _, n in applied_by)
    shares, cumulative = [], 0
    for attempt, n in applied_by:
        cumulative += n
        shares.append(AttemptShare(attempt, n, n / applied, cumulative / applied))
    return Stats(
        since=since,
        until=until,
        failures=_group(failure_rows),
        applied_by_attempt=tuple(shares),
        success_by_attempt=tuple(
            AttemptRate(
                int(r["attempt"]),
                int(r["finished"]),
                int(r["applied"]),
                int(r["applied"]) / int(r["finished"]),
            )
            for r in tries
        ),
        applied=applied,
        exhausted=sum(n for _, n in exhausted_by),
        suggestion=suggest_max_retries(applied_by, exhausted_by, target),
        backlog=read_backlog(conn, tiers_s),
    )


def _group(rows: list[dict[str, Any]]) -> tuple[FailureGroup, ...]:
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        key = (r["error_class"], fingerprint(r["error_message"]))
        g = groups.setdefault(
            key,
            {"n": 0, "ids": set(), "dead": 0, "example": r["error_message"] or "", "last": None},
        )
        g["n"] += int(r["n"])
        g["dead"] += int(r["dead"])
        g["ids"].add(r["schedule_id"])
        g["last"] = max(filter(None, (g["last"], r["last_seen"])))
    out = [
        FailureGroup(cls, fp, g["n"], len(g["ids"]), g["dead"], g["example"], g["last"])
        for (cls, fp), g in groups.items()
    ]
    return tuple(sorted(out, key=lambda f: (-f.attempts, f.error_class, f.fingerprint)))


def render_stats(stats: Stats) -> str:
    """A plain-text report of ``stats`` (fixed-width tables, no colour)."""
    since, until = stats.since.astimezone(UTC), stats.until.astimezone(UTC)
    minutes = (until - since).total_seconds() / 60
    out = [
        f"flagsched stats: attempts finished {since:%Y-%m-%d %H:%M:%S} .. {until:%H:%M:%S}"
        f" UTC ({minutes:.4g} min)"
    ]
    out += ["", f"Failures by class and message ({len(stats.failures)} groups)"]
    out += [f"  {'CLASS':<22}{'ATTEMPTS':>9}{'SCHEDULES':>10}{'DEAD':>6}  MESSAGE"]
    out += [
        f"  {f.error_class:<22}{f.attempts:>9}{f.schedules:>10}{f.dead:>6}  {f.fingerprint}"
        for f in stats.failures
    ] or ["  (none)"]
    out += ["", f"Applied by attempt ({stats.applied} applied, {stats.exhausted} exhausted)"]
    out += [f"  {'ATTEMPT':>7}{'APPLIED':>9}{'SHARE':>8}{'CUMULATIVE':>12}"]
    out += [
        f"  {a.attempt:>7}{a.applied:>9}{a.share:>8.1%}{a.cumulative:>12.1%}"
        for a in stats.applied_by_attempt
    ] or ["  (none)"]
    if stats.first_attempt_share is not None:
        share = stats.first_attempt_share
        out.append(f"  {share:.1%} of schedules that were applied succeeded on attempt 1.")
    if (s := stats.suggestion) is not None:
        small = " (a small sample)" if s.sample_size < 100 else ""
        ended = f"{s.sample_size} applied or exhausted schedules ({s.exhausted} exhausted)"
        if s.lower_bound:
            out.append(
                f"  max_retries suggestion: at least {s.max_retries} -- fewer than"
                f" {s.target:.0%} of the {ended} were applied; the exhausted ones needed more"
                f" than they had{small}"
            )
        else:
            out.append(
                f"  max_retries suggestion: {s.max_retries} -- {s.target:.0%} of the {ended}"
                f" were applied within {s.attempts} attempts{small}"
            )
    out += ["", "Success rate by attempt number (applied / tried)"]
    out += [f"  {'ATTEMPT':>7}{'TRIED':>9}{'APPLIED':>9}{'RATE':>8}"]
    out += [
        f"  {r.attempt:>7}{r.finished:>9}{r.applied:>9}{r.rate:>8.1%}"
        for r in stats.success_by_attempt
    ] or ["  (none)"]
    b = stats.backlog
    out += [
        "",
        f"Retry backlog now: {b.retrying} retrying, oldest overdue "
        f"{b.oldest_overdue_s:.0f}s; {b.dispatch_backlog} due awaiting dispatch "
        f"(oldest {b.oldest_dispatch_s:.0f}s)",
        f"  {'TIER':<10}{'SCHEDULES':>10}",
    ]
    out += [f"  {tier:<10}{n:>10}" for tier, n in b.by_tier.items()]
    return "\n".join(out) + "\n"


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    """``flagsched stats [--since-minutes N] [--json]``: print the report. ``settings``
    name the database (the CLI resolves the local dev stack's endpoints first)."""
    from flagsched.runtime.db.connect import connect

    until = datetime.now(UTC)
    since = until - timedelta(minutes=args.since_minutes)
    with connect(
        settings.require_database_url(), timeout_s=settings.connect_timeout_s, autocommit=True
    ) as conn:
        if getattr(args, "experiment", None):
            try:
                report = experiment_report(
                    conn, args.experiment, resamples=args.resamples, seed=args.seed
                )
            except ExperimentError as exc:  # unknown, or beyond the bootstrap's bound
                raise ConfigError(f"stats --experiment {args.experiment}: {exc}") from exc
            print(report.to_json() if args.json else render_report(report), end="")
            return 0
        stats = failure_stats(conn, since, until, tiers_s=settings.retry_tiers_s)
    log.debug("stats for %s .. %s: %d failure groups", since, until, len(stats.failures))
    print(stats.to_json() if args.json else render_stats(stats), end="")
    return 0


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of minutes, got {text}")
    return value


def _resamples(text: str) -> int:
    value = int(text)
    if not MIN_RESAMPLES <= value <= MAX_RESAMPLES:
        raise argparse.ArgumentTypeError(
            f"must be within {MIN_RESAMPLES}..{MAX_RESAMPLES}, got {text}"
        )
    return value


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be within 0..{MAX_SEED}, got {text}")
    return value


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    handler: Callable[[argparse.Namespace, Settings], int] = cmd_stats,
) -> None:
    """Add ``stats``; it sets ``handler(args, settings) -> int`` like the other commands
    (the CLI passes one that resolves the endpoints first)."""
    text = "failures by class and message, success by attempt, max_retries hint, backlog"
    parser = subparsers.add_parser("stats", help=text, description=text)
    parser.add_argument(
        "--since-minutes",
        type=_positive,
        default=60.0,
        metavar="N",
        help="look at attempts finished in the last N minutes (default 60)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "--experiment",
        metavar="NAME",
        help="instead: the backoff experiment's report per arm (all its schedules still"
        " kept, whatever --since-minutes says)",
    )
    parser.add_argument(
        "--resamples",
        type=_resamples,
        default=1000,
        metavar="N",
        help=f"with --experiment: bootstrap resamples per interval,"
        f" {MIN_RESAMPLES}..{MAX_RESAMPLES} (default 1000); resamples x (per arm: its"
        f" distinct attempt counts + 4 with recovery times) may not exceed"
        f" {MAX_BOOTSTRAP_DRAWS:,}",
    )
    parser.add_argument(
        "--seed",
        type=_seed,
        default=0,
        metavar="N",
        help="with --experiment: seeds the bootstrap; the same seed gives the same report"
        " (default 0)",
    )
    parser.set_defaults(handler=handler)
