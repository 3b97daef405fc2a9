"""``GET /api/admin/experiments`` and ``GET /api/admin/experiments/{name}/report``.

The report is :func:`flagsched.admin.experiments.experiment_report`, the very function
behind ``flagsched stats --experiment NAME``, turned into the API's models (intervals
as ``{low, high}``).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from flagsched.admin.experiments import (
    ExperimentError,
    ReportTooCostly,
    experiment_report,
    load_experiment,
)
from flagsched.admin.service.errors import InvalidInput, NotFound
from flagsched.admin.service.paging import decode_cursor, encode_cursor
from flagsched.admin.service.report_models import (
    ExperimentPage,
    ExperimentReport,
    ExperimentSummary,
)
from flagsched.runtime.db.connect import DictConnection

_LIST = """
SELECT e.name, e.running, e.started_at, e.stopped_at, e.arms,
       (SELECT count(*) FROM flag_schedules s WHERE s.experiment = e.name) AS schedules
  FROM backoff_experiments e
"""


def _after(cursor: str) -> tuple[datetime, str]:
    key = decode_cursor(cursor, "cursor")
    try:
        at, name = key
        when = datetime.fromisoformat(at)
    except (TypeError, ValueError) as exc:
        raise InvalidInput("cursor", "not a cursor of this list") from exc
    if when.tzinfo is None:
        raise InvalidInput("cursor", "not a cursor of this list")
    return when, str(name)


def list_experiments(
    conn: DictConnection,
    *,
    running: bool | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> ExperimentPage:
    """Experiments, the most recently started first, with their arms and sizes."""
    where: list[str] = []
    params: list[Any] = []
    if running is not None:
        where.append("e.running = %s")
        params.append(running)
    if cursor is not None:
        where.append("(e.started_at, e.name) < (%s, %s)")
        params += list(_after(cursor))
    sql = (
        _LIST
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + " ORDER BY e.started_at DESC, e.name DESC LIMIT %s"
    )
    rows = conn.execute(sql, (*params, limit + 1)).fetchall()
    items = [ExperimentSummary.model_validate(r) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = encode_cursor([last.started_at.isoformat(), last.name])
    return ExperimentPage(items=items, next_cursor=next_cursor)


def _interval(ci: Any) -> dict[str, float] | None:
    return None if ci is None else {"low": ci[0], "high": ci[1]}


def report(conn: DictConnection, name: str, *, resamples: int, seed: int) -> ExperimentReport:
    """The experiment's report per arm, and the verdict; NotFound for an unknown name,
    InvalidInput naming ``query.resamples`` beyond the bootstrap's bound."""
    try:
        load_experiment(conn, name)
        got = experiment_report(conn, name, resamples=resamples, seed=seed)
    except ReportTooCostly as exc:
        raise InvalidInput("query.resamples", str(exc)) from exc
    except ExperimentError as exc:
        raise NotFound(str(exc)) from exc
    body = asdict(got)
    for arm in body["arms"]:
        for key in list(arm):
            if key.endswith("_ci"):
                arm[key] = _interval(arm[key])
    return ExperimentReport.model_validate(body | {"resamples": resamples, "seed": seed})
