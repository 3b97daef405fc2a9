"""The admin service: every operator action, one method each, over a connection pool.

The HTTP API and the CLI both call these methods (one home per action). Mutating
methods take the calling :class:`~flagsched.admin.service.access.Actor`, run in one
transaction with its audit row and Idempotency-Key, and nudge the outbox drainer and
the redrive runner after they commit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from flagsched.admin.service import (
    audit,
    bulk,
    dead_letters,
    experiment_reports,
    notifications,
    poison,
    redrives,
    schedules_read,
    schedules_write,
)
from flagsched.admin.service import overview as overview_read
from flagsched.admin.service.access import Actor
from flagsched.admin.service.bulk_models import BulkAction, BulkActionRequest
from flagsched.admin.service.env import Env
from flagsched.admin.service.models import (
    AuditPage,
    DeadLetterFilter,
    DeadLetterPage,
    Page,
    PoisonPage,
    PoisonRepublish,
    PolicyPreviewRequest,
    Preview,
    Redrive,
    RedrivePlan,
    RedriveRequest,
    ScheduleCreate,
    ScheduleDetail,
    ScheduleEdit,
)
from flagsched.admin.service.mutation import Outcome, request_hash, run
from flagsched.admin.service.notifications import NotificationFilter
from flagsched.admin.service.report_models import (
    ExperimentPage,
    ExperimentReport,
    NotificationPage,
)
from flagsched.admin.service.schedules_read import ScheduleFilter
from flagsched.admin.stats import Stats, failure_stats
from flagsched.runtime.db.connect import DictConnection


class AdminService:
    """Operator actions against one database; see the module docstring."""

    def __init__(
        self,
        env: Env,
        pool: ConnectionPool[Any],
        *,
        on_outbox: Callable[[], None] = lambda: None,
        on_redrive: Callable[[], None] = lambda: None,
        on_bulk: Callable[[], None] = lambda: None,
    ) -> None:
        self.env = env
        self.pool = pool
        self.on_outbox = on_outbox
        self.on_redrive = on_redrive
        self.on_bulk = on_bulk

    @staticmethod
    def make_pool(dsn: str, *, max_size: int, timeout_s: float) -> ConnectionPool[Any]:
        """A pool of autocommit dict-row connections (``open`` it before use)."""
        return ConnectionPool(
            dsn,
            min_size=1,
            max_size=max_size,
            timeout=timeout_s,
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "application_name": "flagsched-admin",
            },
            open=False,
        )

    @contextmanager
    def connection(self) -> Iterator[DictConnection]:
        """A pooled connection (autocommit: open a transaction explicitly)."""
        with self.pool.connection() as conn:
            yield conn

    def _mutate(
        self,
        actor: Actor,
        method: str,
        path: str,
        body: Any,
        action: Callable[[DictConnection], Outcome],
    ) -> Outcome:
        with self.connection() as conn:
            outcome = run(conn, actor, request_hash(method, path, body), action)
        if not outcome.replayed:
            self.on_outbox()
        return outcome

    # --- schedules ------------------------------------------------------------------
    def create(self, actor: Actor, flag_key: str, body: ScheduleCreate) -> Outcome:
        """Create a schedule (201 with its location, conflicts listed)."""
        path = f"/api/admin/flags/{flag_key}/schedules"
        return self._mutate(
            actor,
            "POST",
            path,
            body,
            lambda c: schedules_write.create(c, self.env, actor, flag_key, body),
        )

    def edit(self, actor: Actor, flag_key: str, schedule_id: int, body: ScheduleEdit) -> Outcome:
        """Edit a schedule not yet applied."""
        path = f"/api/admin/flags/{flag_key}/schedules/{schedule_id}"
        return self._mutate(
            actor,
            "PATCH",
            path,
            body,
            lambda c: schedules_write.edit(c, self.env, actor, flag_key, schedule_id, body),
        )

    def cancel(self, actor: Actor, flag_key: str, schedule_id: int) -> Outcome:
        """Cancel a live schedule; ``cancelled`` is published after the commit."""
        path = f"/api/admin/flags/{flag_key}/schedules/{schedule_id}/cancel"
        return self._mutate(
            actor,
            "POST",
            path,
            None,
            lambda c: schedules_write.cancel(c, self.env, actor, flag_key, schedule_id),
        )

    def retry(self, actor: Actor, flag_key: str, schedule_id: int) -> Outcome:
        """Manual retry of a retrying or dead schedule."""
        path = f"/api/admin/flags/{flag_key}/schedules/{schedule_id}/retry"
        return self._mutate(
            actor,
            "POST",
            path,
            None,
            lambda c: schedules_write.retry(c, self.env, actor, flag_key, schedule_id),
        )

    def list(
        self, actor: Actor, f: ScheduleFilter, *, sort: str, limit: int, cursor: str | None
    ) -> Page:
        """One page of schedules."""
        with self.connection() as conn:
            return schedules_read.list_schedules(
                conn, actor, f, sort=sort, limit=limit, cursor=cursor
            )

    def show(self, actor: Actor, flag_key: str, schedule_id: int) -> ScheduleDetail:
        """A schedule with its attempts and plan."""
        with self.connection() as conn:
            return schedules_read.show(conn, self.env, actor, flag_key, schedule_id)

    def preview(self, actor: Actor, flag_key: str, schedule_id: int) -> Preview:
        """The retry timeline of a schedule."""
        with self.connection() as conn:
            return schedules_read.preview_schedule(conn, self.env, actor, flag_key, schedule_id)

    def preview_policy(self, body: PolicyPreviewRequest) -> Preview:
        """The retry timeline of a policy."""
        return schedules_read.preview_policy(self.env, body)

    def bulk_action(self, actor: Actor, req: BulkActionRequest) -> Outcome:
        """A dry run (200 with the count and a sample) or a started job (202)."""
        if req.dry_run:
            with self.connection() as conn:
                return Outcome.of(200, bulk.plan(conn, self.env, actor, req))
        outcome = self._mutate(
            actor,
            "POST",
            "/api/admin/schedules/bulk-actions",
            req,
            lambda c: bulk.start(c, self.env, actor, req),
        )
        self.on_bulk()
        return outcome

    def get_bulk_action(self, bulk_id: int) -> BulkAction:
        """A bulk action and its progress."""
        with self.connection() as conn:
            return bulk.get(conn, bulk_id)

    # --- dead letters and redrives ------------------------------------------------------
    def dead_letters(
        self, actor: Actor, f: DeadLetterFilter, *, limit: int, cursor: str | None
    ) -> DeadLetterPage:
        """One page of dead letters."""
        with self.connection() as conn:
            return dead_letters.list_dead_letters(conn, actor, f, limit=limit, cursor=cursor)

    def redrive(self, actor: Actor, req: RedriveRequest) -> Outcome:
        """A dry run (200 with the plan) or a started job (202 with its location)."""
        if req.dry_run:
            with self.connection() as conn:
                return Outcome.of(200, redrives.plan(conn, self.env, actor, req))
        outcome = self._mutate(
            actor,
            "POST",
            "/api/admin/dead-letters/redrive",
            req,
            lambda c: redrives.start(c, self.env, actor, req),
        )
        self.on_redrive()
        return outcome

    def redrive_plan(self, actor: Actor, req: RedriveRequest) -> RedrivePlan:
        """What a redrive would do."""
        with self.connection() as conn:
            return redrives.plan(conn, self.env, actor, req)

    def poison(self, *, last: int) -> PoisonPage:
        """Poison records from the dead-letter topic."""
        return PoisonPage(items=poison.list_poison(self.env, last=last))

    def republish(self, actor: Actor, body: PoisonRepublish) -> Outcome:
        """Republish one poison record (admin; audited)."""
        return self._mutate(
            actor,
            "POST",
            "/api/admin/dead-letters/poison/republish",
            body,
            lambda c: poison.republish(c, self.env, actor, body),
        )

    def get_redrive(self, redrive_id: int) -> Redrive:
        """A redrive job and its progress."""
        with self.connection() as conn:
            return redrives.get(conn, redrive_id)

    # --- the rest -------------------------------------------------------------------------
    def stats_report(self, since: datetime, until: datetime) -> Stats:
        """Failures by class and fingerprint, success by attempt, the max_retries
        suggestion and the backlog, for attempts finished in ``[since, until)``."""
        with self.connection() as conn:
            return failure_stats(conn, since, until, tiers_s=self.env.settings.retry_tiers_s)

    def stats(self, since: datetime, until: datetime) -> dict[str, Any]:
        """What ``flagsched stats`` shows, as JSON."""
        result: dict[str, Any] = json.loads(self.stats_report(since, until).to_json())
        return result

    def overview(self, actor: Actor) -> overview_read.Overview:
        """The UI overview: counts by status, backlog, attempts per minute, latest dead."""
        with self.connection() as conn:
            return overview_read.overview(conn, self.env, actor)

    def breaker(self) -> overview_read.Breaker:
        """The workers' circuit breaker, from the control topic."""
        return overview_read.breaker(self.env)

    def audit(self, **filters: Any) -> AuditPage:
        """The audit trail, newest first."""
        with self.connection() as conn:
            return audit.list_audit(conn, **filters)

    def notifications(
        self, f: NotificationFilter, *, limit: int, cursor: str | None
    ) -> NotificationPage:
        """One page of the notifier's deliveries, newest first."""
        with self.connection() as conn:
            return notifications.list_notifications(conn, f, limit=limit, cursor=cursor)

    def experiments(
        self, *, running: bool | None, limit: int, cursor: str | None
    ) -> ExperimentPage:
        """One page of backoff experiments, newest first."""
        with self.connection() as conn:
            return experiment_reports.list_experiments(
                conn, running=running, limit=limit, cursor=cursor
            )

    def experiment_report(self, name: str, *, resamples: int, seed: int) -> ExperimentReport:
        """What ``flagsched stats --experiment NAME`` shows."""
        with self.connection() as conn:
            return experiment_reports.report(conn, name, resamples=resamples, seed=seed)

    def database_ready(self) -> bool:
        """Whether a query succeeds now."""
        try:
            with self.connection() as conn:
                conn.execute("SELECT 1")
        except Exception:  # any failure means not ready; the probe says so, never raises
            return False
        return True
