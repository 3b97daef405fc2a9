"""The read-only reports, one router: the notifier's deliveries and the backoff
experiments (each in its own module)."""

from __future__ import annotations

from fastapi import APIRouter

from flagsched.admin.api.routes import experiments, notifications

router = APIRouter()
router.include_router(notifications.router)
router.include_router(experiments.router)
