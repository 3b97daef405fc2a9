"""The ``flagsched`` command: the one composition root that wires settings to parts."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from flagsched.runtime.errors import ConfigError, FlagschedError
from flagsched.runtime.settings import Settings, load_settings
from flagsched.runtime.telemetry.metrics import Metrics
from flagsched.runtime.telemetry.tracing import Tracing, setup_tracing

log = logging.getLogger("flagsched")

Handler = Callable[[argparse.Namespace, Settings], int]


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM/SIGINT: finish the batch in hand, commit, leave."""
    stop = threading.Event()

    def _handler(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping after the batch in hand", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    return stop


def with_endpoints(settings: Settings, *, start: bool) -> Settings:
    """Settings pointing at the user's services, or at the local dev stack."""
    if settings.kafka_bootstrap_servers and settings.database_url:
        return settings  # the user's own services: nothing is started or looked up
    try:
        from flagsched.devstack.stack import resolve_endpoints
    except ImportError as exc:  # a product install: the dev stack is developer tooling
        raise ConfigError(
            "set FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS and FLAGSCHED_DATABASE_URL: the local "
            "dev stack (flagsched-devtools) is not installed"
        ) from exc

    endpoints, _ = resolve_endpoints(settings, start=start)
    return settings.model_copy(
        update={
            "kafka_bootstrap_servers": endpoints.kafka_bootstrap_servers,
            "database_url": endpoints.database_url,
        }
    )


def _cmd_migrate(_args: argparse.Namespace, settings: Settings) -> int:
    from flagsched.runtime.db.migrate import migrate

    settings = with_endpoints(settings, start=False)
    applied = migrate(settings.require_database_url(), timeout_s=settings.connect_timeout_s)
    print(f"applied {len(applied)} migration(s): {applied}" if applied else "schema up to date")
    return 0


def _cmd_topics(_args: argparse.Namespace, settings: Settings) -> int:
    from flagsched.admin.topics import create_topics

    settings = with_endpoints(settings, start=False)
    created = create_topics(settings, settings.topic_layout())
    print(f"created {len(created)} topic(s)" + (f": {', '.join(created)}" if created else ""))
    return 0


def _serve_metrics(settings: Settings, metrics: Metrics) -> Callable[[], None]:
    if settings.metrics_port is None:
        return lambda: None
    server = metrics.serve(settings.metrics_port, settings.metrics_addr)
    log.info("metrics on %s", server.url)
    return server.stop


def _cmd_worker(_args: argparse.Namespace, settings: Settings) -> int:
    from flagsched.consumer.worker import Worker

    settings = with_endpoints(settings, start=False)
    provider = setup_tracing(settings)
    metrics = Metrics()
    stop_metrics = _serve_metrics(settings, metrics)
    try:
        Worker(
            settings,
            settings.topic_layout(),
            on_breaker=metrics.set_breaker,
            metrics=metrics,
            tracing=Tracing(provider),
        ).run(_stop_on_signals())
    finally:
        stop_metrics()
        if provider is not None:
            provider.shutdown()  # exports the spans still queued
    return 0


def _cmd_producer(_args: argparse.Namespace, settings: Settings) -> int:
    from flagsched.producer.dispatcher import Dispatcher
    from flagsched.runtime.telemetry.backlog import BacklogCollector

    settings = with_endpoints(settings, start=False)
    metrics = Metrics()
    # Only the dispatcher reports the database-derived backlog (one source, no duplicates).
    BacklogCollector(settings.require_database_url(), settings.retry_tiers_s).register(
        metrics.registry
    )
    provider = setup_tracing(settings)
    stop_metrics = _serve_metrics(settings, metrics)
    try:
        Dispatcher(
            settings,
            settings.topic_layout(),
            metrics=metrics,
            tracing=Tracing(provider),
        ).run(_stop_on_signals())
    finally:
        stop_metrics()
        if provider is not None:
            provider.shutdown()
    return 0


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from flagsched.demo.run import run_demo

    return run_demo(with_endpoints(settings, start=True), schedules=args.schedules)


def _cmd_schemas(args: argparse.Namespace, _settings: Settings) -> int:
    from flagsched.admin.export import export

    drift = export(check=args.check)
    if drift:
        print("out of date: " + ", ".join(drift) + " (run `flagsched schemas export`)")
        return 1
    print("schemas up to date" if args.check else "schemas exported")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree; `flagsched --help` shows it."""
    parser = argparse.ArgumentParser(
        prog="flagsched",
        description="Scheduled feature-flag changes, applied on time, exactly once.",
        epilog="Settings come from FLAGSCHED_* environment variables (see README). "
        "Without FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS / FLAGSCHED_DATABASE_URL the local "
        "dev stack (`flagsched dev up`) is used.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    try:
        from flagsched.devstack.cli import register
    except ImportError:  # a product install without the developer tooling
        pass
    else:
        register(sub)
        demo = add("demo", _cmd_demo, "start the local stack and run a seeded end-to-end demo")
        demo.add_argument("--schedules", type=int, default=300, help="how many schedules to seed")
    from flagsched.admin.stats import cmd_stats
    from flagsched.admin.stats import register as register_stats

    register_stats(
        sub, lambda args, settings: cmd_stats(args, with_endpoints(settings, start=False))
    )
    db = sub.add_parser("db", help="database schema", description="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser("migrate", help="apply missing migrations (idempotent)").set_defaults(
        handler=_cmd_migrate
    )
    topics = sub.add_parser("topics", help="Kafka topic layout", description="topic layout")
    t_sub = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    t_sub.add_parser("create", help="create missing topics (idempotent)").set_defaults(
        handler=_cmd_topics
    )
    add("worker", _cmd_worker, "run one worker (a consumer in the group) until SIGTERM")
    add("producer", _cmd_producer, "run the due-schedule dispatcher until SIGTERM")
    schemas = sub.add_parser("schemas", help="the exported contract", description="contract")
    s_sub = schemas.add_subparsers(dest="schemas_command", required=True, metavar="ACTION")
    export = s_sub.add_parser(
        "export", help="write the JSON Schema files and the AsyncAPI document"
    )
    export.add_argument("--check", action="store_true", help="fail if the files are stale")
    export.set_defaults(handler=_cmd_schemas)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)
    try:
        settings = load_settings()
        code: int = args.handler(args, settings)
    except FlagschedError as exc:
        print(f"flagsched: {exc}", file=sys.stderr)
        return 2
    return code
