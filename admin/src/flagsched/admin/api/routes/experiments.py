"""``/api/admin/experiments``: backoff experiments and their reports."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from flagsched.admin.api.auth import require
from flagsched.admin.api.deps import problems, service
from flagsched.admin.experiments import (
    MAX_BOOTSTRAP_DRAWS,
    MAX_RESAMPLES,
    MAX_SEED,
    MIN_RESAMPLES,
)
from flagsched.admin.service.access import Actor
from flagsched.admin.service.core import AdminService
from flagsched.admin.service.report_models import ExperimentPage, ExperimentReport

router = APIRouter(prefix="/api/admin", tags=["experiments"])
Svc = Annotated[AdminService, Depends(service)]


@router.get(
    "/experiments",
    response_model=ExperimentPage,
    responses=problems(401, 403, 422),
    summary="Backoff experiments, most recently started first",
)
def list_experiments(
    svc: Svc,
    running: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
    _actor: Actor = Depends(require("experiments.read")),  # noqa: B008
) -> ExperimentPage:
    return svc.experiments(running=running, limit=limit, cursor=cursor)


@router.get(
    "/experiments/{name}/report",
    response_model=ExperimentReport,
    responses=problems(401, 403, 404, 422),
    summary="Per arm: rates, attempts, recovery times with 95 % intervals; the verdict",
)
def experiment_report(
    name: Annotated[
        str, Path(pattern=r"^[A-Za-z0-9._-]{1,100}$", description="the experiment's name")
    ],
    svc: Svc,
    resamples: Annotated[
        int,
        Query(
            ge=MIN_RESAMPLES,
            le=MAX_RESAMPLES,
            description="bootstrap resamples per interval; resamples x (per arm: its"
            " distinct attempt counts + 4 with recovery times) may not exceed"
            f" {MAX_BOOTSTRAP_DRAWS:,} (else 422)",
        ),
    ] = 1000,
    seed: Annotated[
        int, Query(ge=0, le=MAX_SEED, description="seeds the bootstrap: same seed, same report")
    ] = 0,
    _actor: Actor = Depends(require("experiments.read")),  # noqa: B008
) -> ExperimentReport:
    return svc.experiment_report(name, resamples=resamples, seed=seed)
