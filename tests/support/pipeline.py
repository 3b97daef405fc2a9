"""Test helpers for the pipeline: per-test databases and topics, running parts, waiting."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
from kafka import KafkaConsumer
from psycopg import sql
from psycopg.rows import dict_row

from flagsched.admin.topics import create_topics
from flagsched.consumer.worker import Worker
from flagsched.producer.dispatcher import Dispatcher
from flagsched.runtime.db.migrate import migrate
from flagsched.runtime.settings import Settings
from flagsched.schemas.topics import TopicLayout

T = TypeVar("T")
#: One template per test process: several runs (with different migrations, say) can share
#: one PostgreSQL server without dropping each other's template mid-copy.
TEMPLATE_DB = f"flagsched_test_template_{os.getpid()}"


def settings_env(settings: Settings) -> dict[str, str]:
    """The FLAGSCHED_* environment that reproduces ``settings`` in a subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGSCHED_")}
    for name, value in settings.model_dump(exclude_none=True).items():
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        key = f"FLAGSCHED_{name.upper()}"
        env[key] = json.dumps(list(value)) if isinstance(value, tuple) else str(value)
    return env


def wait_until(
    condition: Callable[[], T],
    *,
    timeout_s: float = 30.0,
    what: str = "condition",
    interval_s: float = 0.05,
) -> T:
    """Poll ``condition`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: T = condition()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last={last!r}")
        threading.Event().wait(
            interval_s
        )  # a poll interval of a deadline loop, not a sleep-and-hope
        last = condition()
    return last


def with_db(dsn: str, dbname: str) -> str:
    """The same server, another database."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    info["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


def make_template(dsn: str) -> None:
    """A migrated template database that per-test databases are copied from."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEMPLATE_DB))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE_DB)))
    migrate(with_db(dsn, TEMPLATE_DB))


def drop_template(dsn: str) -> None:
    """Remove this process's template database (at the end of a test session)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEMPLATE_DB))
        )


def fresh_database(dsn: str) -> str:
    """A new database copied from the template; returns its DSN."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(TEMPLATE_DB)
            )
        )
    return with_db(dsn, name)


def test_settings(bootstrap: str, dsn: str, **overrides: Any) -> Settings:
    """Settings for one test: its own topic prefix and group, short tiers, fast policy."""
    tag = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "database_url": dsn,
        "topic_prefix": f"t{tag}",
        "group_id": f"g{tag}",
        "retry_tiers_s": (0.5, 1.0, 2.0),
        "due_partitions": 3,
        "priority_partitions": 3,
        "tier_partitions": 3,  # as many as the due topic: settings refuse other counts
        "max_retries": 3,
        "backoff_base_s": 0.4,
        "backoff_multiplier": 2.0,
        "backoff_cap_s": 3.0,
        "jitter": "none",
        "apply_lock_timeout_ms": 200,
        "dispatch_poll_interval_s": 0.2,
        "infra_pause_s": 0.5,
        "session_timeout_ms": 6000,
        "transaction_timeout_ms": 3000,
    }
    values.update(overrides)
    return Settings(**values)


def setup_topics(settings: Settings) -> TopicLayout:
    """Create the test's topics."""
    layout = settings.topic_layout()
    create_topics(settings, layout)
    return layout


def connect(dsn: str) -> psycopg.Connection[dict[str, Any]]:
    """An autocommit connection with dict rows."""
    return psycopg.connect(dsn, autocommit=True, row_factory=dict_row)


def add_flag(conn: psycopg.Connection[Any], key: str, *, enabled: bool = False) -> None:
    """Create a feature flag."""
    conn.execute("INSERT INTO feature_flags (key, enabled) VALUES (%s, %s)", (key, enabled))


def add_schedule(
    conn: psycopg.Connection[Any],
    flag_key: str,
    updates: dict[str, Any],
    *,
    at: datetime | None = None,
    priority: str = "normal",
    max_retries: int | None = None,
    retry_policy: dict[str, Any] | None = None,
) -> int:
    """Create a pending schedule; returns its id."""
    row = conn.execute(
        "INSERT INTO flag_schedules (flag_key, updates, scheduled_at, priority, max_retries,"
        " retry_policy) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (
            flag_key,
            json.dumps(updates),
            at or datetime.now(UTC),
            priority,
            max_retries,
            json.dumps(retry_policy) if retry_policy else None,
        ),
    ).fetchone()
    assert row is not None
    return int(row["id"] if isinstance(row, dict) else row[0])


def schedule(conn: psycopg.Connection[Any], sid: int) -> dict[str, Any]:
    """The schedule row."""
    row = conn.execute("SELECT * FROM flag_schedules WHERE id = %s", (sid,)).fetchone()
    assert row is not None
    return dict(row)


def attempts(conn: psycopg.Connection[Any], sid: int) -> list[dict[str, Any]]:
    """Attempt rows of a schedule, in order."""
    return [
        dict(r)
        for r in conn.execute(
            "SELECT * FROM schedule_retry_attempts WHERE schedule_id = %s ORDER BY attempt", (sid,)
        )
    ]


def status_is(conn: psycopg.Connection[Any], sid: int, *statuses: str) -> bool:
    """Whether the schedule reached one of ``statuses``."""
    return schedule(conn, sid)["status"] in statuses


class Running:
    """A part (worker or dispatcher) running in a thread, stopped on exit."""

    def __init__(self, target: Callable[[threading.Event], None], name: str) -> None:
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(target,), name=name, daemon=True)

    def _run(self, target: Callable[[threading.Event], None]) -> None:
        try:
            target(self.stop)
        except BaseException as exc:
            self.error = exc
            raise

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), f"{self.thread.name} did not stop"
        if self.error is not None:
            raise AssertionError(f"{self.thread.name} crashed") from self.error


@contextlib.contextmanager
def running_worker(settings: Settings, **kwargs: Any) -> Iterator[Worker]:
    """A worker in a thread, ready (joined the group) when the block starts."""
    worker = Worker(settings, settings.topic_layout(), **kwargs)
    with Running(worker.run, f"worker-{worker.worker_id}"):
        wait_until(worker.ready.is_set, timeout_s=30, what="worker's first poll")
        yield worker


def owns(worker: Worker, topic: str) -> bool:
    """Whether ``worker`` currently owns a partition of ``topic``."""
    return any(tp.topic == topic for tp in worker.assigned)


@contextlib.contextmanager
def running_dispatcher(settings: Settings, **kwargs: Any) -> Iterator[Dispatcher]:
    """A dispatcher in a thread."""
    dispatcher = Dispatcher(settings, settings.topic_layout(), **kwargs)
    with Running(dispatcher.run, "dispatcher"):
        yield dispatcher


def read_topic(settings: Settings, topic: str, *, expect: int, timeout_s: float = 30) -> list[Any]:
    """Read at least ``expect`` committed records of ``topic`` from the beginning."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        enable_auto_commit=False,
        consumer_timeout_ms=200,
    )
    records: list[Any] = []
    try:

        def enough() -> bool:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
            return len(records) >= expect

        wait_until(enough, timeout_s=timeout_s, what=f"{expect} records on {topic}")
    finally:
        consumer.close()
    return records


def header_map(record: Any) -> dict[str, str]:
    """Headers of a record as str -> str."""
    return {k: v.decode() for k, v in record.headers or []}


def hold_flag_lock(dsn: str, key: str) -> tuple[psycopg.Connection[Any], Callable[[], None]]:
    """Hold a real row lock on a flag (a real fault); returns the connection and a release."""
    conn = psycopg.connect(dsn)
    conn.execute("SELECT 1 FROM feature_flags WHERE key = %s FOR UPDATE", (key,))

    def release() -> None:
        conn.rollback()
        conn.close()

    return conn, release


def seconds_from_now(s: float) -> datetime:
    """An aware UTC time ``s`` seconds from now."""
    return datetime.now(UTC) + timedelta(seconds=s)
