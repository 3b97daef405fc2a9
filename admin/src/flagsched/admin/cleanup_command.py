"""``flagsched cleanup [--dry-run] [--periodic | --every-s N]``: one retention run, or the
periodic task.

The periodic task is a process of its own (one replica; docs/deployment.md), not part of
the dispatcher: deleting thousands of rows must never delay a due schedule's dispatch,
and the advisory lock keeps a second replica (or a manual run) from running alongside.
"""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from flagsched.admin.retention import CleanupMetrics, CleanupResult, cleanup
from flagsched.runtime.settings import Settings

log = logging.getLogger(__name__)


def run_once(settings: Settings, *, dry_run: bool, stop: threading.Event | None) -> CleanupResult:
    """Connect and run :func:`~flagsched.admin.retention.cleanup` once with ``settings``."""
    from flagsched.runtime.db.connect import connect

    with connect(
        settings.require_database_url(), timeout_s=settings.connect_timeout_s, autocommit=True
    ) as conn:
        return cleanup(
            conn,
            settings.retention_days(),
            dry_run=dry_run,
            batch_size=settings.cleanup_batch_size,
            stop=stop,
        )


def run_periodically(
    settings: Settings,
    stop: threading.Event,
    *,
    every_s: float,
    dry_run: bool = False,
    metrics: CleanupMetrics | None = None,
) -> int:
    """Run every ``every_s`` seconds until ``stop`` is set; a failed run is logged and
    counted, and the next one tries again. Returns the number of runs."""
    runs = 0
    while not stop.is_set():
        try:
            result = run_once(settings, dry_run=dry_run, stop=stop)
        except Exception:  # the next run retries; a crash loop would not delete more
            log.exception("cleanup run failed; next in %.0fs", every_s)
            if metrics is not None:
                metrics.runs.labels("failed").inc()
        else:
            if metrics is not None:
                metrics.record(result)
        runs += 1
        stop.wait(every_s)
    return runs


def _render(result: CleanupResult) -> str:
    verb = "would delete" if result.dry_run else "deleted"
    if result.locked_out:
        return "cleanup: another cleanup is running; nothing done\n"
    per = ", ".join(f"{status} {n}" for status, n in result.deleted.items())
    return (
        f"cleanup: {verb} {result.schedules} schedules ({per}), {result.attempts} attempt"
        f" rows and {result.change_log} change-log rows"
        + ("" if result.dry_run else f" in {result.batches} batches")
        + f" ({result.duration_s:.2f}s)\n"
    )


def cmd_cleanup(
    args: argparse.Namespace,
    settings: Settings,
    stop: threading.Event | None = None,
    registry: CollectorRegistry | None = None,
) -> int:
    """Run once and print what was deleted, or with ``--every-s`` until ``stop`` is set
    (metrics on ``FLAGSCHED_METRICS_PORT`` when set)."""
    every_s = args.every_s or (settings.cleanup_interval_s if args.periodic else None)
    if every_s is None:
        print(_render(run_once(settings, dry_run=args.dry_run, stop=stop)), end="")
        return 0
    from flagsched.runtime.telemetry.server import serve_registry

    registry = registry if registry is not None else CollectorRegistry()
    metrics = CleanupMetrics(registry)
    server = None
    if settings.metrics_port is not None:
        server = serve_registry(registry, settings.metrics_port, settings.metrics_addr)
    try:
        run_periodically(
            settings,
            stop or threading.Event(),
            every_s=every_s,
            dry_run=args.dry_run,
            metrics=metrics,
        )
    finally:
        if server is not None:
            server.stop()
    return 0


def _interval(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    handler: Callable[[argparse.Namespace, Settings], int],
) -> None:
    """Add ``cleanup``; ``handler(args, settings)`` runs it (the CLI passes one that
    resolves the endpoints and the stop signal first)."""
    text = (
        "delete terminal schedules past their retention (FLAGSCHED_RETENTION_*_DAYS),"
        " with their attempt and change-log rows; never pending, dispatched or retrying"
    )
    parser = subparsers.add_parser("cleanup", help=text, description=text)
    parser.add_argument(
        "--dry-run", action="store_true", help="count what would be deleted; delete nothing"
    )
    parser.add_argument(
        "--periodic",
        action="store_true",
        help="the periodic task: run every FLAGSCHED_CLEANUP_INTERVAL_S (default 3600)"
        " until SIGTERM",
    )
    parser.add_argument(
        "--every-s",
        type=_interval,
        default=None,
        metavar="N",
        help="the periodic task, every N seconds instead",
    )
    parser.set_defaults(handler=handler)
