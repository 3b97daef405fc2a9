"""The bench's world: the services, one database and topic set per benchmark, processes.

Every benchmark gets its own database (created, then migrated with flagsched's
own migrations), its own topic prefix and its own consumer group, so runs never
see each other's rows or records. flagsched's parts run as real processes
(``python -m flagsched worker`` / ``producer``) configured through ``FLAGSCHED_*``
variables, exactly as an operator would run them.

"Applied at" is the commit time of the transaction that wrote the change-log row
(``pg_xact_commit_timestamp``; the bench turns ``track_commit_timestamp`` on in
the stack it starts). Against external services with it off, the bench falls
back to ``flag_change_log.applied_at`` (the transaction's start) and says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from kafka.errors import KafkaError
from psycopg import sql
from tests.support.pipeline import settings_env

from flagsched.admin.topics import create_topics
from flagsched.devstack.endpoints import DATABASE_ENV, KAFKA_ENV
from flagsched.runtime.db.migrate import migrate
from flagsched.runtime.settings import load_settings
from flagsched.schemas.topics import TopicLayout

log = logging.getLogger("bench")

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Services:
    """Where Kafka and PostgreSQL are, and what they are."""

    kafka: str
    admin_dsn: str
    commit_ts: bool
    kafka_version: str
    pg_version: str
    owned: bool


def with_db(dsn: str, dbname: str) -> str:
    """The same server, another database."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    info["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


@contextlib.contextmanager
def open_services(work_dir: Path) -> Iterator[Services]:
    """The user's services when both FLAGSCHED_* endpoints are set, else a fresh dev stack."""
    kafka, dsn = os.environ.get(KAFKA_ENV), os.environ.get(DATABASE_ENV)
    if kafka and dsn:
        yield Services(kafka, dsn, _commit_ts(dsn), "external", _pg_version(dsn), owned=False)
        return
    from flagsched.devstack.kafka import KAFKA_VERSION
    from flagsched.devstack.stack import DevStack

    stack = DevStack(work_dir / "devstack", load_settings().dev_home)
    log.info("starting a dev stack in %s", stack.run_dir)
    endpoints = stack.up()
    try:
        dsn = endpoints.database_url
        # Exact "applied" times: the commit time of the applying transaction.
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
        stack.postgres.stop()
        stack.postgres.start()
        yield Services(
            endpoints.kafka_bootstrap_servers,
            dsn,
            _commit_ts(dsn),
            KAFKA_VERSION,
            _pg_version(dsn),
            owned=True,
        )
    finally:
        stack.down()


def _commit_ts(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SHOW track_commit_timestamp").fetchone()
    return bool(row and row[0] == "on")


def _pg_version(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


def applied_at_sql(services: Services, alias: str = "l") -> str:
    """SQL for when a change-log row became visible (see the module docstring)."""
    if services.commit_ts:
        return f"pg_xact_commit_timestamp({alias}.xmin)"
    return f"{alias}.applied_at"


# --- processes ----------------------------------------------------------------------
@dataclass
class Proc:
    """A subprocess with its log file."""

    label: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    peak_rss_kb: int | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def status_kb(self, key: str) -> int | None:
        """A ``/proc/<pid>/status`` field in kB (VmHWM: peak RSS; VmRSS: current)."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(f"{key}:"):
                    return int(line.split()[1])
        except (OSError, ValueError):
            return None
        return None

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (the parts finish their batch and leave), then SIGKILL past the timeout."""
        if self.alive():
            self.peak_rss_kb = self.status_kb("VmHWM")
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing it", self.label, timeout_s)
                self.popen.kill()
                self.popen.wait(timeout=10)
        return self.popen.returncode


def spawn(args: list[str], env: dict[str, str], log_path: Path, label: str) -> Proc:
    """Start ``args`` with stderr and stdout in ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as out:
        popen = subprocess.Popen(
            args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )
    return Proc(label, popen, log_path)


# --- one benchmark's world ------------------------------------------------------------
@dataclass
class World:
    """A database, a topic prefix and a consumer group of one's own."""

    services: Services
    name: str
    raw_dir: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)

    def __post_init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.dbname = f"bench_{self.name.replace('-', '_')}_{tag}"
        with psycopg.connect(self.services.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dbname)))
        self.dsn = with_db(self.services.admin_dsn, self.dbname)
        values: dict[str, Any] = {
            "kafka_bootstrap_servers": self.services.kafka,
            "database_url": self.dsn,
            "topic_prefix": f"bench-{self.name}-{tag}",
            "group_id": f"bench-{self.name}-{tag}",
        }
        self.settings = load_settings(**(values | self.overrides))

    def migrate(self) -> None:
        migrate(self.dsn)

    def create_topics(self) -> TopicLayout:
        layout = self.settings.topic_layout()
        create_topics(self.settings, layout)
        return layout

    @property
    def layout(self) -> TopicLayout:
        return self.settings.topic_layout()

    def env(self, **extra: str) -> dict[str, str]:
        return settings_env(self.settings) | self.extra_env | extra

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, autocommit=True)

    def start(self, args: list[str], label: str, env: dict[str, str] | None = None) -> Proc:
        proc = spawn(args, env or self.env(), self.raw_dir / self.name / f"{label}.log", label)
        self.procs.append(proc)
        return proc

    def worker(self, label: str, wrap: list[str] | None = None) -> Proc:
        args = [sys.executable, "-m", "flagsched.cli", "worker"]
        return self.start((wrap or []) + args, label, self.env(FLAGSCHED_WORKER_ID=label))

    def dispatcher(self, label: str = "dispatcher") -> Proc:
        return self.start([sys.executable, "-m", "flagsched.cli", "producer"], label)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def drop(self) -> None:
        with psycopg.connect(self.services.admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(self.dbname)
                )
            )


@contextlib.contextmanager
def world(
    services: Services,
    name: str,
    raw_dir: Path,
    *,
    topics: bool = True,
    schema: bool = True,
    **overrides: Any,
) -> Iterator[World]:
    """A fresh :class:`World`; its processes are stopped and its database dropped after."""
    w = World(services, name, raw_dir, overrides)
    try:
        if schema:
            w.migrate()
        if topics:
            w.create_topics()
        yield w
    finally:
        w.stop_all()
        w.drop()


# --- waiting ------------------------------------------------------------------------
def group_assignment(kafka: str, group_prefix: str) -> tuple[int, dict[str, tuple[str, int]]]:
    """Partitions assigned in the groups named ``group_prefix`` or ``group_prefix.*``,
    and each group's (state, member count). Asked of the group coordinator, so it does
    not depend on what the worker logs or how many consumers it runs."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka.split(","))
    try:
        names = [
            g["group_id"]
            for g in admin.list_groups()
            if g["group_id"] == group_prefix or g["group_id"].startswith(group_prefix + ".")
        ]
        described = admin.describe_groups(names) if names else {}
    finally:
        admin.close()
    total, states = 0, {}
    for name, group in described.items():
        states[name] = (str(group["group_state"]), len(group["members"]))
        for member in group["members"]:
            assignment = member.get("member_assignment") or {}
            if isinstance(assignment, dict):
                for tp in assignment.get("assigned_partitions", []):
                    total += len(tp["partitions"])
    return total, states


def wait_workers_ready(
    w: World, workers: list[Proc], partitions: int, timeout_s: float = 90.0
) -> None:
    """Until the group is stable: every worker a member, every partition assigned."""
    deadline = time.monotonic() + timeout_s
    stable_since: float | None = None
    total, states = 0, dict[str, tuple[str, int]]()
    while time.monotonic() < deadline:
        for p in workers:
            if not p.alive():
                raise RuntimeError(f"{p.label} exited: {p.log_text()[-2000:]}")
        try:
            total, states = group_assignment(w.services.kafka, w.settings.group_id)
        except KafkaError as exc:  # e.g. the coordinator is still loading
            log.debug("group not described yet: %s", exc)
            time.sleep(0.5)
            continue
        ok = (
            total == partitions
            and bool(states)
            and all(st == "Stable" and n == len(workers) for st, n in states.values())
        )
        if ok:
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since >= 1.0:
                return
        else:
            stable_since = None
        time.sleep(0.25)
    raise RuntimeError(
        f"workers not ready after {timeout_s}s: {total} of {partitions} partitions assigned,"
        f" groups {states}"
    )


def consumed_partitions(w: World) -> int:
    """How many partitions the worker group shares."""
    layout = w.layout
    return sum(spec.partitions for spec in layout.specs() if spec.name in layout.consumed)


def run_dir(base: Path | None = None) -> Path:
    """A temporary directory for the stack and scratch files."""
    return Path(tempfile.mkdtemp(prefix="flagsched-bench-", dir=base))


def group_lag(kafka: str, group_id: str, topics: list[str]) -> dict[str, Any]:
    """Per non-empty topic: end offsets and the group's committed offsets, summed and per
    partition. Transactional markers count as offsets too, so compare, don't equate."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=kafka.split(","), group_id=group_id, enable_auto_commit=False
    )
    out: dict[str, Any] = {}
    try:
        for topic in topics:
            parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            if not parts:
                continue
            ends = consumer.end_offsets(parts)
            committed = {tp: consumer.committed(tp) or 0 for tp in parts}
            if not sum(ends.values()):
                continue
            out[topic] = {
                "end": sum(ends.values()),
                "committed": sum(committed.values()),
                "per_partition_end_committed": [
                    (ends[tp], committed[tp]) for tp in sorted(parts, key=lambda t: t.partition)
                ],
            }
    finally:
        consumer.close()
    return out
