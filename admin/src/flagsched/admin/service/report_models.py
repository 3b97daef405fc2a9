"""Responses of the read-only reports: the notifier's deliveries and the backoff
experiments. Part of the API's contract like service/models.py (the OpenAPI document
is generated from these)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from flagsched.admin.service.models import ResponseModel, UtcTime

DeliveryStatus = Literal[
    "pending", "queued", "retrying", "sent", "failed", "suppressed", "dropped", "disabled"
]


class Notification(ResponseModel):
    """One notification delivery: one event for one sink (``notification_deliveries``),
    with the message (digest) that carries it."""

    event_key: str = Field(description="the event's key; with `sink`, the row's identity")
    sink: str = Field(description="the sink's name in the rules file")
    rule: str = Field(description="the rule that matched the event")
    kind: str = Field(description="the event kind, e.g. dead_lettered, breaker_opened, resolve")
    schedule_id: int | None
    status: DeliveryStatus = Field(
        description="pending (waiting for its digest), queued, retrying, sent, failed (gave"
        " up), suppressed (deduplicated), dropped (overtaken), disabled (the endpoint"
        " answered 410)"
    )
    attempts: int = Field(description="sends of its message so far")
    response_code: int | None = Field(description="the sink's last HTTP status")
    next_attempt_at: UtcTime | None = Field(description="when the next send is due")
    created_at: UtcTime
    updated_at: UtcTime
    message_id: str | None = Field(description="the digest's id (the webhook-id)")
    dedup_key: str | None = Field(description="PagerDuty dedup_key / Opsgenie alias")
    last_error: str | None


class NotificationPage(ResponseModel):
    """One page of deliveries, newest first; pass ``next_cursor`` as ``cursor``."""

    items: list[Notification]
    next_cursor: str | None


class Interval(ResponseModel):
    """A 95 % interval."""

    low: float
    high: float


class ExperimentArm(ResponseModel):
    """An arm as the experiment was started: its weight and retry policy."""

    name: str
    weight: int
    policy: dict[str, object]


class ExperimentSummary(ResponseModel):
    """A backoff experiment (``backoff_experiments``, migration 0009)."""

    name: str
    running: bool
    started_at: UtcTime
    stopped_at: UtcTime | None
    arms: list[ExperimentArm]
    schedules: int = Field(description="schedules that joined it (and are still stored)")


class ExperimentPage(ResponseModel):
    """One page of experiments, newest first; pass ``next_cursor`` as ``cursor``."""

    items: list[ExperimentSummary]
    next_cursor: str | None


class ArmFigures(ResponseModel):
    """One arm's figures. Rates are over finished schedules (applied, dead, superseded,
    cancelled), with Wilson intervals; the rest with percentile-bootstrap intervals."""

    arm: str
    weight: int
    schedules: int
    finished: int
    applied: int
    dead: int
    applied_rate: float | None
    applied_rate_ci: Interval
    dead_rate: float | None
    dead_rate_ci: Interval
    attempts_per_applied: float | None
    attempts_per_applied_ci: Interval | None
    recovered: int = Field(description="applied after at least one failure")
    recovery_p50_s: float | None = Field(description="first failure to applied, median")
    recovery_p50_ci: Interval | None
    recovery_p99_s: float | None = Field(description="first failure to applied, p99")
    recovery_p99_ci: Interval | None


class ExperimentVerdict(ResponseModel):
    """The winning arm, only when it beats every other significantly; else ``null``."""

    winner: str | None
    reason: str


class ExperimentReport(ResponseModel):
    """What ``flagsched stats --experiment NAME --json`` shows."""

    experiment: str
    arms: list[ArmFigures]
    verdict: ExperimentVerdict
    resamples: int
    seed: int
