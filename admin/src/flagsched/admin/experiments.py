"""Backoff experiments: start, stop and list them, and ``flagsched stats --experiment``.

An experiment is a row of ``backoff_experiments`` (migration 0009); at most one runs.
While it runs, every new schedule without an explicit policy (``retry_policy`` and
``max_retries`` both NULL) joins it at insert, by the trigger of migration 0009: the
arm (:func:`flagsched.schemas.retry.experiments.assign`) and the arm's policy are
stored on the row. The report reads those rows back, per arm.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from flagsched.admin.experiment_bootstrap import (
    bootstrap_mean,
    bootstrap_quantiles,
    quantile_sorted,
)
from flagsched.admin.experiment_stats import ArmSample, Verdict, verdict, wilson
from flagsched.schemas.retry.experiments import Experiment
from flagsched.schemas.retry.policy import RetryPolicy


class ExperimentError(ValueError):
    """An experiment that cannot be started, stopped or reported."""


def start_experiment(
    conn: psycopg.Connection[Any], experiment: Experiment, defaults: RetryPolicy
) -> None:
    """Start ``experiment`` (each arm's policy must merge with ``defaults``); fails if
    another is running or the name was used before."""
    for arm in experiment.arms:
        defaults.merged(arm.policy)  # raises pydantic's ValidationError, naming the field
    arms = [a.model_dump(mode="json", exclude_none=True) for a in experiment.arms]
    try:
        conn.execute(
            "INSERT INTO backoff_experiments (name, arms) VALUES (%s, %s)",
            (experiment.name, json.dumps(arms)),
        )
    except psycopg.errors.UniqueViolation as exc:
        raise ExperimentError(
            f"experiment {experiment.name!r} exists or another experiment is running"
        ) from exc


def stop_experiment(conn: psycopg.Connection[Any], name: str) -> bool:
    """Stop ``name``: new schedules no longer join; those that did keep their arm."""
    got = conn.execute(
        "UPDATE backoff_experiments SET running = false, stopped_at = now()"
        " WHERE name = %s AND running RETURNING name",
        (name,),
    ).fetchone()
    return got is not None


def load_experiment(conn: psycopg.Connection[Any], name: str) -> Experiment:
    """The experiment as it was started."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT name, arms FROM backoff_experiments WHERE name = %s", (name,)
        ).fetchone()
    if row is None:
        raise ExperimentError(f"no experiment named {name!r}")
    return Experiment.model_validate({"name": row["name"], "arms": row["arms"]})


@dataclass(frozen=True)
class Outcome:
    """One schedule of the experiment, as the report sees it."""

    arm: str
    status: str
    attempts: int | None  # the attempt that finished it
    recovery_s: float | None  # first failure to applied (applied schedules that failed)


@dataclass(frozen=True)
class ArmReport:
    """One arm's figures with 95 % intervals (Wilson for rates, bootstrap for the rest)."""

    arm: str
    weight: int
    schedules: int
    finished: int
    applied: int
    dead: int
    applied_rate: float | None
    applied_rate_ci: tuple[float, float]
    dead_rate: float | None
    dead_rate_ci: tuple[float, float]
    attempts_per_applied: float | None
    attempts_per_applied_ci: tuple[float, float] | None
    recovered: int  # applied after at least one failure
    recovery_p50_s: float | None
    recovery_p50_ci: tuple[float, float] | None
    recovery_p99_s: float | None
    recovery_p99_ci: tuple[float, float] | None


@dataclass(frozen=True)
class ExperimentReport:
    """Every arm's figures and the verdict."""

    experiment: str
    arms: tuple[ArmReport, ...]
    verdict: Verdict

    def to_json(self) -> str:
        """All fields as JSON."""
        return json.dumps(asdict(self), indent=2)


_FINISHED = ("applied", "dead", "superseded", "cancelled")


#: The bootstrap resamples and seeds a report may ask for (the API's and the CLI's).
MIN_RESAMPLES, MAX_RESAMPLES = 100, 10_000
MAX_SEED = 2**31 - 1

#: Bounds one report's bootstrap work, in random draws: ``resamples`` times, summed
#: over the arms, the arm's distinct ``attempts`` values (the mean's bootstrap draws one
#: binomial per distinct value and resample) plus 4 when it has recovery times (p50
#: and p99 each interpolate between two order statistics, one Beta draw each). The
#: cost does not grow with the number of schedules. A report at the bound takes about
#: 1 s on the shared 2-CPU dev machine (docs/admin-api.md); beyond it the report is
#: refused before any work, naming ``resamples`` and the most that would fit.
MAX_BOOTSTRAP_DRAWS = 250_000


class ReportTooCostly(ExperimentError):
    """The report's bootstrap would exceed :data:`MAX_BOOTSTRAP_DRAWS`."""

    def __init__(self, resamples: int, max_resamples: int) -> None:
        super().__init__(
            f"{resamples} resamples exceed this experiment's bound of {max_resamples}"
            f" (resamples x its draws per resample <= {MAX_BOOTSTRAP_DRAWS:,},"
            " experiments.MAX_BOOTSTRAP_DRAWS)"
        )
        self.resamples = resamples
        self.max_resamples = max_resamples


def _by_arm(experiment: Experiment, outcomes: Iterable[Outcome]) -> dict[str, list[Outcome]]:
    by_arm: dict[str, list[Outcome]] = {a.name: [] for a in experiment.arms}
    for o in outcomes:
        by_arm.setdefault(o.arm, []).append(o)
    return by_arm


def _arm_report(
    arm: str, weight: int, rows: Sequence[Outcome], resamples: int, seed: int
) -> tuple[ArmReport, ArmSample]:
    finished = [o for o in rows if o.status in _FINISHED]
    applied = [o for o in finished if o.status == "applied"]
    dead = sum(o.status == "dead" for o in finished)
    tries = [float(o.attempts) for o in applied if o.attempts is not None]
    recovery = sorted(o.recovery_s for o in applied if o.recovery_s is not None)
    n = len(finished)
    # p50 and p99 from the same resamples: one bootstrap pass, not two.
    p50_ci, p99_ci = bootstrap_quantiles(
        recovery, (0.5, 0.99), resamples=resamples, seed=seed + 2
    ) or (None, None)
    report = ArmReport(
        arm=arm,
        weight=weight,
        schedules=len(rows),
        finished=n,
        applied=len(applied),
        dead=dead,
        applied_rate=len(applied) / n if n else None,
        applied_rate_ci=wilson(len(applied), n),
        dead_rate=dead / n if n else None,
        dead_rate_ci=wilson(dead, n),
        attempts_per_applied=sum(tries) / len(tries) if tries else None,
        attempts_per_applied_ci=bootstrap_mean(tries, resamples=resamples, seed=seed + 1),
        recovered=len(recovery),
        recovery_p50_s=quantile_sorted(recovery, 0.5) if recovery else None,
        recovery_p50_ci=p50_ci,
        recovery_p99_s=quantile_sorted(recovery, 0.99) if recovery else None,
        recovery_p99_ci=p99_ci,
    )
    return report, ArmSample(arm, n, dead, recovery)


def bootstrap_draws(outcomes_by_arm: Iterable[Sequence[Outcome]], resamples: int) -> int:
    """The bootstrap work of a report, as :data:`MAX_BOOTSTRAP_DRAWS` counts it."""
    per_resample = 0
    for rows in outcomes_by_arm:
        applied = [o for o in rows if o.status == "applied"]
        per_resample += len({o.attempts for o in applied if o.attempts is not None})
        per_resample += 4 if any(o.recovery_s is not None for o in applied) else 0
    return resamples * per_resample


def build_report(
    experiment: Experiment,
    outcomes: Iterable[Outcome],
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> ExperimentReport:
    """The report from the experiment's schedules (pure: the tests simulate these).

    Rates are over *finished* schedules; a schedule still pending or retrying counts in
    ``schedules`` only. Bootstrap intervals use ``resamples`` draws seeded by ``seed``
    (experiment_bootstrap.py). Raises :class:`ReportTooCostly` beyond
    :data:`MAX_BOOTSTRAP_DRAWS`, before any work.
    """
    by_arm = _by_arm(experiment, outcomes)
    draws = bootstrap_draws(by_arm.values(), resamples)
    if draws > MAX_BOOTSTRAP_DRAWS:
        raise ReportTooCostly(resamples, MAX_BOOTSTRAP_DRAWS * resamples // draws)
    weights = {a.name: a.weight for a in experiment.arms}
    arms = [
        _arm_report(arm, weights.get(arm, 0), rows, resamples, seed * 1000 + i * 10)
        for i, (arm, rows) in enumerate(by_arm.items())
    ]
    return ExperimentReport(
        experiment.name, tuple(r for r, _ in arms), verdict([s for _, s in arms])
    )


_OUTCOMES = """
SELECT experiment_arm AS arm, status, finished_attempt AS attempts,
       CASE WHEN status = 'applied' AND first_failed_at IS NOT NULL
            THEN extract(epoch FROM finished_at - first_failed_at)::float8 END AS recovery_s
  FROM flag_schedules
 WHERE experiment = %s
"""


def experiment_outcomes(conn: psycopg.Connection[Any], name: str) -> list[Outcome]:
    """The schedules of experiment ``name`` still stored, as the report sees them."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_OUTCOMES, (name,)).fetchall()
    return [Outcome(r["arm"], r["status"], r["attempts"], r["recovery_s"]) for r in rows]


def experiment_report(
    conn: psycopg.Connection[Any], name: str, *, resamples: int = 1000, seed: int = 0
) -> ExperimentReport:
    """The report of experiment ``name`` from its schedules in the database (those that
    retention has not deleted yet)."""
    experiment = load_experiment(conn, name)
    return build_report(experiment, experiment_outcomes(conn, name), resamples=resamples, seed=seed)


def _pct(value: float | None, ci: tuple[float, float]) -> str:
    if value is None:
        return "-"
    return f"{value:.1%} [{ci[0]:.1%}, {ci[1]:.1%}]"


def _num(value: float | None, ci: tuple[float, float] | None, unit: str = "") -> str:
    if value is None or ci is None or math.isnan(value):
        return "-"
    return f"{value:.3g}{unit} [{ci[0]:.3g}, {ci[1]:.3g}]"


def render_report(report: ExperimentReport) -> str:
    """A plain-text report: one block per arm, then the verdict."""
    out = [f"flagsched stats --experiment {report.experiment} (95% intervals in brackets)"]
    for a in report.arms:
        out += [
            "",
            f"arm {a.arm} (weight {a.weight}): {a.schedules} schedules, {a.finished} finished",
            f"  applied rate        {_pct(a.applied_rate, a.applied_rate_ci)}",
            f"  dead rate           {_pct(a.dead_rate, a.dead_rate_ci)}",
            f"  attempts/applied    {_num(a.attempts_per_applied, a.attempts_per_applied_ci)}",
            f"  first failure to applied ({a.recovered} schedules):"
            f" p50 {_num(a.recovery_p50_s, a.recovery_p50_ci, 's')},"
            f" p99 {_num(a.recovery_p99_s, a.recovery_p99_ci, 's')}",
        ]
    v = report.verdict
    out += ["", f"verdict: {v.winner} wins: {v.reason}" if v.winner else f"verdict: {v.reason}"]
    return "\n".join(out) + "\n"
