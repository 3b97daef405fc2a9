"""Runs the demo: migrate, create topics, seed, one dispatcher and two workers, a live
view, and a closing summary read back from the database (the truth)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
from rich.console import Console
from rich.live import Live
from rich.table import Table

from flagsched.admin.api.server import AdminServer
from flagsched.admin.service.tokens import create_token
from flagsched.admin.settings import load_admin_settings
from flagsched.admin.topics import create_topics
from flagsched.consumer.worker import Worker
from flagsched.demo.seed import DemoPlan, seed
from flagsched.producer.dispatcher import Dispatcher
from flagsched.runtime.db.connect import connect
from flagsched.runtime.db.migrate import migrate
from flagsched.runtime.settings import Settings
from flagsched.schemas.topics import TopicLayout

log = logging.getLogger(__name__)

DEMO_OVERRIDES: dict[str, Any] = {
    "retry_tiers_s": (1.0, 2.0, 5.0),
    "max_retries": 4,
    "backoff_base_s": 1.0,
    "backoff_cap_s": 8.0,
    "jitter": "equal",
    "apply_lock_timeout_ms": 300,
    "dispatch_poll_interval_s": 0.5,
    "session_timeout_ms": 6000,
}
TERMINAL = ("applied", "dead", "superseded", "cancelled")


def run_demo(settings: Settings, *, schedules: int, deadline_s: float = 90.0) -> int:
    """Run the demo end to end; return 0 when every schedule reached a final state."""
    run_id = datetime.now(UTC).strftime("%H%M%S")
    settings = settings.model_copy(
        update={
            **DEMO_OVERRIDES,
            "topic_prefix": f"flagsched-demo-{run_id}",
            "group_id": f"flagsched-demo-{run_id}",
        }
    )
    console = Console()
    dsn = settings.require_database_url()
    migrate(dsn)
    layout = settings.topic_layout()
    create_topics(settings, layout)
    admin = _start_admin(console, settings)
    stop = threading.Event()
    workers = [Worker(settings, layout, worker_id=f"demo-w{i}") for i in (1, 2)]
    threads = [threading.Thread(target=w.run, args=(stop,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    # Schedules fall due once both workers own partitions of both lanes: a group that
    # is still joining would be measured as lateness.
    settled = time.monotonic() + 30
    while time.monotonic() < settled and not all(_settled(w, layout) for w in workers):
        stop.wait(0.1)
    with connect(dsn, autocommit=True) as conn:
        plan = seed(conn, run_id, schedules)
    console.print(
        f"[bold]flagsched demo[/] run {run_id}: {len(plan.schedule_ids)} schedules "
        f"due from {plan.first_due:%H:%M:%S} UTC over ~20 s"
    )
    for target, args in (
        (_hold_locks, (dsn, plan, stop)),
        (Dispatcher(settings, layout).run, (stop,)),
    ):
        threads.append(threading.Thread(target=target, args=args, daemon=True))
        threads[-1].start()
    finished = _watch(console, dsn, plan, deadline_s)
    stop.set()
    for t in threads:
        t.join(timeout=20)
    if admin is not None:
        admin.stop()
    with connect(dsn, autocommit=True) as conn:
        console.print(summary_table(conn, plan, layout))
    return 0 if finished else 1


def _start_admin(console: Console, settings: Settings) -> AdminServer | None:
    """The admin API beside the demo, with a fresh operator token printed once."""
    admin = load_admin_settings()
    if admin.admin_tokens_file is None:
        admin = admin.model_copy(
            update={"admin_tokens_file": settings.dev_home / "demo-admin-tokens.json"}
        )
    assert admin.admin_tokens_file is not None
    token = create_token(admin.admin_tokens_file, "admin", name="demo")
    server = AdminServer(settings, admin)
    try:
        server.start()
    except (RuntimeError, SystemExit, OSError) as exc:  # e.g. the port is taken
        console.print(f"admin API not started on {admin.admin_addr}:{admin.admin_port}: {exc}")
        return None
    console.print(
        f"[bold]admin API[/] on {server.url} (docs: {server.url}/api/admin/docs)\n"
        f"  curl -H 'Authorization: Bearer {token}' {server.url}/api/admin/schedules\n"
        f"[bold]web UI[/] on {server.url}/ui/ (log in with the token above)"
    )
    return server


def _settled(worker: Worker, layout: TopicLayout) -> bool:
    topics = {tp.topic for tp in worker.assigned}
    return layout.due in topics and layout.priority in topics


def _hold_locks(dsn: str, plan: DemoPlan, stop: threading.Event) -> None:
    """A 'maintenance job' holding real row locks: a few flags briefly, one for the whole run."""
    with psycopg.connect(dsn) as whole, psycopg.connect(dsn) as brief:
        whole.execute(
            "SELECT 1 FROM feature_flags WHERE key = %s FOR UPDATE", (plan.always_locked,)
        )
        brief.execute(
            "SELECT 1 FROM feature_flags WHERE key = ANY(%s) FOR UPDATE", (plan.briefly_locked,)
        )
        release_at = plan.first_due.timestamp() + 4.0
        stop.wait(max(0.0, release_at - time.time()))
        brief.rollback()
        stop.wait()
        whole.rollback()


def _counts(dsn: str, plan: DemoPlan) -> dict[str, int]:
    with connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT status, count(*) AS n FROM flag_schedules WHERE id = ANY(%s) GROUP BY status",
            (plan.schedule_ids,),
        ).fetchall()
    return {str(r["status"]): int(r["n"]) for r in rows}


def _watch(console: Console, dsn: str, plan: DemoPlan, deadline_s: float) -> bool:
    end = time.monotonic() + deadline_s
    total = len(plan.schedule_ids)
    with Live(console=console, refresh_per_second=4) as live:
        while time.monotonic() < end:
            counts = _counts(dsn, plan)
            live.update(_progress(counts, total))
            if sum(counts.get(s, 0) for s in TERMINAL) == total:
                return True
            threading.Event().wait(0.25)
    return False


def _progress(counts: dict[str, int], total: int) -> Table:
    table = Table(title=f"schedules ({total})")
    for status in ("pending", "dispatched", "retrying", *TERMINAL):
        table.add_column(status, justify="right")
    table.add_row(
        *(str(counts.get(s, 0)) for s in ("pending", "dispatched", "retrying", *TERMINAL))
    )
    return table


def _one(conn: psycopg.Connection[dict[str, Any]], query: str, *args: Any) -> Any:
    row = conn.execute(query, args).fetchone()
    return None if row is None else next(iter(row.values()))


def summary_table(
    conn: psycopg.Connection[dict[str, Any]], plan: DemoPlan, layout: TopicLayout
) -> Table:
    """The closing summary, read from the database."""
    ids = plan.schedule_ids
    table = Table(title="flagsched demo summary", show_header=False)
    add: Callable[[str, object], None] = lambda k, v: table.add_row(k, str(v))  # noqa: E731
    counts = {
        str(r["status"]): int(r["n"])
        for r in conn.execute(
            "SELECT status, count(*) AS n FROM flag_schedules WHERE id = ANY(%s) GROUP BY status",
            (ids,),
        )
    }
    add("schedules", len(ids))
    for status in (
        "applied",
        "superseded",
        "dead",
        "cancelled",
        "pending",
        "dispatched",
        "retrying",
    ):
        if counts.get(status):
            add(status, counts[status])
    for r in conn.execute(
        "SELECT finished_attempt AS a, count(*) AS n FROM flag_schedules WHERE id = ANY(%s)"
        " AND status = 'applied' AND finished_attempt > 1 GROUP BY 1 ORDER BY 1",
        (ids,),
    ):
        add(f"applied on attempt {r['a']}", r["n"])
    for r in conn.execute(
        "SELECT a.dlt_reason AS reason, a.error_class AS cls, count(*) AS n"
        " FROM schedule_retry_attempts a WHERE a.schedule_id = ANY(%s) AND a.outcome = 'dead'"
        " GROUP BY 1, 2 ORDER BY 3 DESC",
        (ids,),
    ):
        add(f"dead-lettered: {r['reason']} ({r['cls']})", r["n"])
    for label, cond in (("first attempts", "attempt = 1"), ("retries", "attempt > 1")):
        q = conn.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lateness_ms) AS p50,"
            " percentile_cont(0.99) WITHIN GROUP (ORDER BY lateness_ms) AS p99,"
            " max(lateness_ms) AS mx, min(lateness_ms) AS mn, count(*) AS n"
            f" FROM schedule_retry_attempts WHERE schedule_id = ANY(%s) AND {cond}",
            (ids,),
        ).fetchone()
        if q and q["n"]:
            add(
                f"lateness of {label} (ms)",
                f"p50 {q['p50']:.0f}  p99 {q['p99']:.0f}  max {q['mx']:.0f}  "
                f"min {q['mn']:.0f}  (n={q['n']})",
            )
    add("topics to look at", f"{layout.dead_letter}, {layout.lifecycle}, {layout.prefix}.retry.*")
    return table
