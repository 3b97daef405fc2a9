"""Chaos runs with a ledger check: one harness for the CI fault tests and ``bench.chaos``.

A workload of N schedules runs against real Kafka and PostgreSQL while real faults
are injected; then :func:`check_ledger` accounts for every schedule from the database
and the topics. The workload (:func:`seed_workload`) mixes

* healthy schedules (a few critical ones, on flags of their own),
* transient failures: flags whose rows a helper connection holds locked for a while
  (``lock_contention``, retried through the delay tiers; the same fault as
  ``pipeline.hold_flag_lock``, several flags per connection),
* permanent failures: an unknown flag, ``{"rollout_percentage": 150}`` (a CHECK
  violation) and ``{"enabled": "yes"}`` (an invalid update),
* supersede pairs: an older schedule whose retry arrives after a newer change to the
  same flag.

Faults (:data:`FAULT_KINDS`): SIGKILL of a worker process (a new one starts at once,
with a new identity), SIGKILL and a restart with the same ``FLAGSCHED_WORKER_ID`` (a
static member back, no rebalance), a broker stop and restart, a PostgreSQL outage
longer than the breaker threshold, and a rebalance (a worker joins and later leaves)
while tier partitions are held. Workers and the dispatcher are real ``flagsched``
processes; one that exits on its own is restarted, as a process supervisor would, and
listed in the ledger.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.partitioner.default import murmur2

from flagsched.devstack import DevStack
from flagsched.runtime.settings import Settings
from flagsched.schemas import headers as hdr
from tests.support.chaos_cleanup import CleanupChaos, archived
from tests.support.pipeline import connect, header_map, settings_env, wait_until

if TYPE_CHECKING:
    from tests.support.chaos_hostile import HostileChaos

log = logging.getLogger(__name__)

FAULT_KINDS = ("worker_kill", "worker_restart", "broker_restart", "postgres_outage", "rebalance")
#: How long after a fault ended schedules due count as due "during" it (the lateness by
#: fault kind): the longest a worker's partitions may wait for a new owner, and then some.
FAULT_AFTERMATH_S = 8.0
FINAL = ("applied", "dead", "superseded", "cancelled")
#: The key of the lateness summary over every healthy schedule, whatever fault it was due in.
ALL_HEALTHY = "all healthy"
#: Settings every chaos run uses on top of the test defaults (short tiers, fast policy).
CHAOS_OVERRIDES: dict[str, Any] = {"apply_lock_timeout_ms": 100, "max_poll_records": 100}
#: Breaker settings for runs with a database outage: it opens after two failures.
BREAKER_OVERRIDES: dict[str, Any] = {
    "breaker_failure_threshold": 2,
    "infra_pause_s": 0.2,
    "breaker_probe_base_s": 0.3,
    "breaker_probe_cap_s": 1.0,
}

# Workload categories.
HEALTHY = "healthy"
TRANSIENT = "transient"
PERMANENT = "permanent"
PAIR_OLD = "pair-old"
PAIR_NEW = "pair-new"
CANARY = "canary"
CANARY_LOCKED = "canary-locked"
_RETRYABLE_CATEGORIES = (TRANSIENT, PAIR_OLD, PAIR_NEW, CANARY_LOCKED)
_TRANSIENT_CLASS = "lock_contention"  # the only transient failure the workload causes
_POLL_S = 0.05


# --- the workload ------------------------------------------------------------------------


@dataclass
class LockGroup:
    """Flags locked by one helper connection from the start of a phase until ``release_at``
    (epoch seconds), or earlier once each of ``until_ids`` has ``until_attempts`` attempts."""

    keys: list[str]
    release_at: float
    until_ids: list[int] = field(default_factory=list)
    until_attempts: int = 1


@dataclass
class Workload:
    """What was seeded: every schedule's category, the flags and the lock plan."""

    run_id: str
    category: dict[int, str] = field(default_factory=dict)
    expected_error: dict[int, str] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    locks: list[LockGroup] = field(default_factory=list)
    first_due: float = 0.0
    last_due: float = 0.0
    #: schedule id -> attempts that were dead when an operator retried them by hand
    manual_retries: dict[int, list[int]] = field(default_factory=dict)
    #: ids of hostile rows and forged records (chaos_hostile), checked by their own rules
    foreign_ids: set[int] = field(default_factory=set)

    @property
    def ids(self) -> list[int]:
        """Every schedule of the run."""
        return sorted(self.category)

    def of(self, *categories: str) -> list[int]:
        """The schedules of the given categories."""
        return sorted(s for s, c in self.category.items() if c in categories)


@dataclass(frozen=True)
class _Row:
    category: str
    key: str
    updates: dict[str, Any]
    due: float
    priority: str = "normal"
    retry_policy: dict[str, Any] | None = None
    max_retries: int | None = None
    expected_error: str | None = None


def _healthy_update(rng: random.Random) -> dict[str, Any]:
    roll = rng.random()
    if roll < 0.4:
        return {"enabled": rng.random() < 0.5}
    if roll < 0.8:
        return {"rollout_percentage": rng.randrange(0, 101)}
    return {"enabled": True, "config": {"variant": rng.choice("ABC")}}


def _bucket(t: float, width_s: float) -> float:
    return round(t / width_s) * width_s


def seed_workload(
    conn: psycopg.Connection[Any],
    n: int,
    *,
    run_id: str,
    start_in_s: float = 3.0,
    spread_s: float = 8.0,
    seed: int = 0,
    transient_retry_base_s: float | None = None,
) -> Workload:
    """Insert flags and ``n`` schedules due from ``start_in_s`` over ``spread_s`` seconds.

    ``transient_retry_base_s`` gives lock-failed schedules a per-schedule backoff base,
    so their retries sit held in the tier topics for that long (the rebalance test).
    """
    rng = random.Random(seed)
    t0 = time.time() + start_in_s
    n_perm = max(6, n * 3 // 100)
    n_locked = max(4, min(20, n // 200))  # flags, three schedules each
    n_pairs = max(3, min(20, n // 250))
    n_crit = max(3, n * 2 // 100)
    n_healthy = n - n_perm - 3 * n_locked - 2 * n_pairs
    if n_healthy < n_crit + 10:
        raise ValueError(f"{n} schedules are too few for the workload mix")
    w = Workload(run_id, first_due=t0, last_due=t0 + spread_s)
    healthy_flags = [f"{run_id}.h{i}" for i in range(max(10, n // 10))]
    crit_flags = [f"{run_id}.c{i}" for i in range(max(2, n_crit // 3))]
    bad_flag = f"{run_id}.bad"
    bursts = [t0 + spread_s * f for f in (0.25, 0.5, 0.75)]
    rows: list[_Row] = []
    for i in range(n_healthy):
        due = rng.choice(bursts) if i % 4 == 0 else t0 + rng.uniform(0, spread_s)
        if i < n_crit:
            rows.append(
                _Row(HEALTHY, crit_flags[i % len(crit_flags)], {"enabled": True}, due, "critical")
            )
        else:
            rows.append(_Row(HEALTHY, rng.choice(healthy_flags), _healthy_update(rng), due))
    permanent: list[tuple[dict[str, Any], str]] = [
        ({"enabled": True}, "flag_not_found"),  # on a flag that does not exist
        ({"rollout_percentage": 150}, "constraint_violation"),
        ({"enabled": "yes"}, "invalid_update"),
    ]
    for i in range(n_perm):
        updates, error = permanent[i % len(permanent)]
        key = f"{run_id}.missing{i}" if error == "flag_not_found" else bad_flag
        due = t0 + rng.uniform(0, spread_s)
        rows.append(_Row(PERMANENT, key, updates, due, expected_error=error))
    policy = {"base_s": transient_retry_base_s} if transient_retry_base_s else None
    locked_until: dict[float, list[str]] = defaultdict(list)
    for i in range(n_locked):
        key, at = f"{run_id}.l{i}", t0 + spread_s * rng.uniform(0.1, 0.8)
        for j in range(3):
            rows.append(
                _Row(TRANSIENT, key, _healthy_update(rng), at + 0.05 * j, retry_policy=policy)
            )
        locked_until[_bucket(at + rng.uniform(0.8, 2.0), 0.5)].append(key)
    pairs: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for i in range(n_pairs):
        key, at = f"{run_id}.s{i}", t0 + spread_s * rng.uniform(0.1, 0.8)
        # The older one retries late (3 s), after the newer one is applied: superseded.
        rows.append(_Row(PAIR_OLD, key, {"enabled": True}, at, retry_policy={"base_s": 3.0}))
        rows.append(_Row(PAIR_NEW, key, {"enabled": False, "rollout_percentage": 7}, at + 0.3))
        pairs[key].append((key, at))  # a lock of its own, released once the older one failed
    w.flags = sorted(
        {*healthy_flags, *crit_flags, bad_flag, *(r.key for r in rows if r.category != PERMANENT)}
    )
    ids = _insert(conn, w.flags, rows)
    for sid, row in zip(ids, rows, strict=True):
        w.category[sid] = row.category
        if row.expected_error:
            w.expected_error[sid] = row.expected_error
    w.locks = [LockGroup(keys, release_at) for release_at, keys in sorted(locked_until.items())]
    old_ids = {row.key: sid for sid, row in zip(ids, rows, strict=True) if row.category == PAIR_OLD}
    for members in pairs.values():
        w.locks.append(
            LockGroup(
                [k for k, _ in members],
                release_at=max(at for _, at in members) + 6.0,
                until_ids=[old_ids[k] for k, _ in members],
            )
        )
    return w


def _insert(conn: psycopg.Connection[Any], flags: Sequence[str], rows: Sequence[_Row]) -> list[int]:
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany("INSERT INTO feature_flags (key) VALUES (%s)", [(k,) for k in flags])
        cur.executemany(
            "INSERT INTO flag_schedules (flag_key, updates, scheduled_at, priority, max_retries,"
            " retry_policy) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            [
                (
                    r.key,
                    json.dumps(r.updates),
                    datetime.fromtimestamp(r.due, UTC),
                    r.priority,
                    r.max_retries,
                    json.dumps(r.retry_policy) if r.retry_policy else None,
                )
                for r in rows
            ],
            returning=True,
        )
        ids: list[int] = []
        while True:
            got = cur.fetchone()
            assert got is not None
            ids.append(int(got["id"] if isinstance(got, dict) else got[0]))
            if not cur.nextset():
                break
    return ids


def keys_per_partition(prefix: str, partitions: int) -> list[str]:
    """One flag key per partition, as kafka-python's default partitioner places keys."""
    found: dict[int, str] = {}
    for i in itertools.count():
        key = f"{prefix}{i}"
        found.setdefault((murmur2(key.encode()) & 0x7FFFFFFF) % partitions, key)
        if len(found) == partitions:
            return [found[p] for p in range(partitions)]
    raise AssertionError("unreachable")


def seed_canaries(
    conn: psycopg.Connection[Any], w: Workload, settings: Settings
) -> list[LockGroup]:
    """After the faults: a schedule through every due and priority partition, and a
    lock-failed one through every partition of every tier (three retries: 0.5, 1 and 2 s
    with the lock-contention backoff), to show that nothing stayed paused."""
    layout = settings.topic_layout()
    count = partition_counts(settings, [layout.due, layout.priority, *layout.tier_topics])
    tiers = max(count[t] for t in layout.tier_topics)
    now = time.time() + 1.5  # time to take the locks first
    rows = [
        _Row(CANARY, k, {"enabled": True}, now)
        for k in keys_per_partition(f"{w.run_id}.cd", count[layout.due])
    ]
    rows += [
        _Row(CANARY, k, {"enabled": True}, now, "critical")
        for k in keys_per_partition(f"{w.run_id}.cp", count[layout.priority])
    ]
    locked = keys_per_partition(f"{w.run_id}.ct", tiers)
    rows += [_Row(CANARY_LOCKED, k, {"enabled": True}, now, max_retries=3) for k in locked]
    keys = sorted({r.key for r in rows})
    ids = _insert(conn, keys, rows)
    w.flags += keys
    for sid, row in zip(ids, rows, strict=True):
        w.category[sid] = row.category
    # One lock per flag, released once its schedule failed three times: the fourth and
    # last attempt (max_retries=3) then succeeds.
    return [
        LockGroup([row.key], release_at=now + 20.0, until_ids=[sid], until_attempts=3)
        for sid, row in zip(ids, rows, strict=True)
        if row.category == CANARY_LOCKED
    ]


class LockHolder:
    """Holds real row locks on flags (one helper connection per group) and releases each
    group on its plan. Connections cut by a database outage simply lose their locks."""

    def __init__(self, dsn: str, groups: Sequence[LockGroup]) -> None:
        self._dsn = dsn
        self._groups = list(groups)
        self._conns: dict[int, psycopg.Connection[Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lock-holder", daemon=True)
        self.released = 0

    def __enter__(self) -> LockHolder:
        for i, group in enumerate(self._groups):
            conn = psycopg.connect(self._dsn)
            conn.execute(
                "SELECT 1 FROM feature_flags WHERE key = ANY(%s) FOR UPDATE", (group.keys,)
            )
            self._conns[i] = conn
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for i in list(self._conns):
            self._release(i)

    def _release(self, i: int) -> None:
        conn = self._conns.pop(i, None)
        if conn is not None:
            with contextlib.suppress(Exception):  # gone with an outage: the lock went too
                conn.rollback()
            with contextlib.suppress(Exception):
                conn.close()
            self.released += 1

    def _run(self) -> None:
        while self._conns and not self._stop.wait(_POLL_S):
            attempts = self._attempt_counts()
            for i in list(self._conns):
                group = self._groups[i]
                reached = bool(group.until_ids) and all(
                    attempts.get(s, 0) >= group.until_attempts for s in group.until_ids
                )
                if reached or time.time() >= group.release_at:
                    self._release(i)

    def _attempt_counts(self) -> dict[int, int]:
        ids = [s for i in self._conns for s in self._groups[i].until_ids]
        if not ids:
            return {}
        try:
            with connect(self._dsn) as conn:
                rows = conn.execute(
                    "SELECT schedule_id, count(*) AS n FROM schedule_retry_attempts"
                    " WHERE schedule_id = ANY(%s) GROUP BY 1",
                    (ids,),
                ).fetchall()
        except psycopg.Error:  # the database is down (a fault): decide next turn
            return {}
        return {int(r["schedule_id"]): int(r["n"]) for r in rows}


# --- processes -----------------------------------------------------------------------------


@dataclass
class Proc:
    """One ``flagsched worker`` or ``flagsched producer`` process."""

    name: str
    role: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    expected_exit: bool = False

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None


class Processes:
    """Workers and the dispatcher as real processes, with a supervisor that restarts any
    process that exits unasked (and records it: a process should survive outages)."""

    def __init__(self, settings: Settings, log_dir: Path, run_id: str) -> None:
        self._env = settings_env(settings)
        self._log_dir = log_dir
        self._run_id = run_id
        self._seq = itertools.count(1)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
        self.procs: list[Proc] = []
        self.exits: list[str] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, role: str, name: str | None = None) -> Proc:
        """Start a worker (``role="worker"``) or the dispatcher (``role="dispatcher"``);
        ``name`` (and so the worker id) is new unless given."""
        with self._lock:
            name = name or f"{role}-{next(self._seq)}"
            log_name = f"{name}.{next(self._seq)}"
            command = "worker" if role == "worker" else "producer"
            log_path = self._log_dir / f"{log_name}.log"
            with log_path.open("wb") as out:
                popen = subprocess.Popen(
                    [sys.executable, "-m", "flagsched.cli", command],
                    env=self._env | {"FLAGSCHED_WORKER_ID": f"{self._run_id}-{name}"},
                    stdout=subprocess.DEVNULL,
                    stderr=out,
                )
            proc = Proc(name, role, popen, log_path)
            self.procs.append(proc)
            return proc

    def supervise(self) -> None:
        """Start restarting processes that exit unasked."""
        self._thread.start()

    def workers(self) -> list[Proc]:
        """Running workers that are meant to keep running."""
        with self._lock:
            return [p for p in self.procs if p.role == "worker" and p.alive and not p.expected_exit]

    def kill(self, proc: Proc) -> None:
        """SIGKILL: a crash, no leave-group, maybe in the middle of a Kafka transaction."""
        with self._lock:
            proc.expected_exit = True
        proc.popen.send_signal(signal.SIGKILL)
        proc.popen.wait(timeout=10)

    def terminate(self, proc: Proc, timeout_s: float = 30.0) -> None:
        """SIGTERM: finish the batch, commit, leave the group."""
        with self._lock:
            proc.expected_exit = True
        if not proc.alive:
            return
        proc.popen.send_signal(signal.SIGTERM)
        try:
            proc.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.exits.append(
                f"{proc.name} did not stop within {timeout_s:.0f}s of SIGTERM (hung; stacks in"
                f" {proc.log_path} when py-spy is installed)"
            )
            dump_stacks(proc)
            proc.popen.kill()
            proc.popen.wait(timeout=10)

    def close(self) -> None:
        """Stop supervising and stop every process (SIGTERM)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        with self._lock:
            running = [p for p in self.procs if p.alive]
            for p in running:
                p.expected_exit = True
                p.popen.send_signal(signal.SIGTERM)
        for p in running:
            self.terminate(p)

    def _supervise(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                for p in list(self.procs):
                    if p.expected_exit or p.alive:
                        continue
                    p.expected_exit = True
                    self.exits.append(
                        f"{p.name} exited with code {p.popen.returncode}: {last_error(p.log_path)}"
                        f" (restarted; log {p.log_path})"
                    )
                    self.start(p.role)


def dump_stacks(proc: Proc) -> None:
    """Append the Python stacks of a hung process to its log, if py-spy is installed
    (next to this interpreter, as the bench extra puts it, or on PATH)."""
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        return
    done = subprocess.run(
        [py_spy, "dump", "--pid", str(proc.popen.pid)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    with proc.log_path.open("a") as out:
        out.write(f"\n=== py-spy dump of the hung process ===\n{done.stdout}{done.stderr}\n")


def last_error(path: Path) -> str:
    """The last line of a traceback in a process log, else its last line."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    errors = [line for line in lines if not line.startswith((" ", "\t", "Traceback"))]
    return (errors or lines or ["(empty log)"])[-1][:300]


# --- faults -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedFault:
    """A fault to inject ``at_s`` seconds after the first schedule is due."""

    at_s: float
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; one of {FAULT_KINDS}")


@dataclass
class FaultEvent:
    """A fault as injected."""

    kind: str
    at_s: float
    took_s: float
    detail: dict[str, Any] = field(default_factory=dict)


def spaced_times(rng: random.Random, count: int, lo: float, hi: float, gap: float) -> list[float]:
    """``count`` random moments in [lo, hi], at least ``gap`` apart."""
    slack = hi - lo - gap * (count - 1)
    if slack < 0:
        raise ValueError("the window is too short for that many faults")
    cuts = sorted(rng.uniform(0, slack) for _ in range(count))
    return [lo + c + i * gap for i, c in enumerate(cuts)]


class Injector:
    """Injects the faults of :data:`FAULT_KINDS` into a running pipeline."""

    def __init__(
        self,
        settings: Settings,
        workload: Workload,
        procs: Processes,
        devstack: DevStack | None,
        rng: random.Random,
        *,
        outage_s: float = 3.0,
        stay_s: float = 2.0,
    ) -> None:
        self.settings = settings
        self.workload = workload
        self.procs = procs
        self.devstack = devstack
        self.rng = rng
        self.outage_s = outage_s
        self.stay_s = stay_s
        self.events: list[FaultEvent] = []
        self._dsn = settings.require_database_url()

    def inject(self, kind: str) -> None:
        """Inject one fault; it is over (services back) when this returns."""
        started = time.time()
        detail: dict[str, Any] = getattr(self, f"_{kind}")()
        self.events.append(
            FaultEvent(
                kind,
                round(started - self.workload.first_due, 2),
                round(time.time() - started, 2),
                detail,
            )
        )
        log.info("fault %s at %+.1fs: %s", kind, started - self.workload.first_due, detail)

    def _stack(self) -> DevStack:
        if self.devstack is None:
            raise RuntimeError("stopping servers needs the local dev stack")
        return self.devstack

    def _worker_kill(self) -> dict[str, Any]:
        victim = self.rng.choice(self.procs.workers())
        self.procs.kill(victim)
        replacement = self.procs.start("worker")
        return {"killed": victim.name, "started": replacement.name}

    def _worker_restart(self) -> dict[str, Any]:
        victim = self.rng.choice(self.procs.workers())
        self.procs.kill(victim)
        again = self.procs.start("worker", victim.name)  # the same id: a static member back
        return {"restarted": again.name}

    def _broker_restart(self) -> dict[str, Any]:
        kafka = self._stack().kafka
        kafka.stop()
        try:
            threading.Event().wait(self.outage_s)  # the broker stays down: this wait IS the fault
        finally:
            kafka.start()  # whatever happens, the rest of the run gets its broker back
        return {"outage_s": self.outage_s}

    def _postgres_outage(self) -> dict[str, Any]:
        # Cut the database while records are in flight, so the workers feel it.
        busy = self._wait_count("status IN ('dispatched', 'retrying')", at_least=3, timeout_s=3.0)
        postgres = self._stack().postgres
        postgres.stop()
        try:
            threading.Event().wait(self.outage_s)  # the database stays down: this wait IS the fault
        finally:
            postgres.start()
        return {"outage_s": self.outage_s, "in_flight_at_stop": busy}

    def _rebalance(self) -> dict[str, Any]:
        # records waiting in the delay tiers: retries, and schedules dispatched ahead of time
        held = (
            "((status = 'retrying' AND next_retry_at > now() + interval '300 milliseconds')"
            " OR (status = 'dispatched' AND scheduled_at > now() + interval '300 milliseconds'))"
        )
        before = self._wait_count(held, at_least=1, timeout_s=5.0)
        visitor = self.procs.start("worker")
        members = len(self.procs.workers())
        wait_until(
            lambda: group_members(self.settings) == members,
            timeout_s=60,
            what=f"{visitor.name} joined the group",
            interval_s=0.2,
        )
        at_join = self._count(held)
        threading.Event().wait(self.stay_s)  # the visitor's stay in the group IS the fault
        at_leave = self._wait_count(held, at_least=1, timeout_s=5.0)
        self.procs.terminate(visitor)
        wait_until(
            lambda: group_members(self.settings) == members - 1,
            timeout_s=60,
            what=f"{visitor.name} left the group",
            interval_s=0.2,
        )
        return {
            "visitor": visitor.name,
            "held_before": before,
            "held_at_join": at_join,
            "held_at_leave": at_leave,
        }

    def _count(self, where: str) -> int:
        try:
            with connect(self._dsn) as conn:
                row = conn.execute(
                    f"SELECT count(*) AS n FROM flag_schedules WHERE id = ANY(%s) AND {where}",
                    (self.workload.ids,),
                ).fetchone()
        except psycopg.Error:
            return 0
        return int(row["n"]) if row else 0

    def _wait_count(self, where: str, *, at_least: int, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        n = self._count(where)
        while n < at_least and time.monotonic() < deadline:
            threading.Event().wait(_POLL_S)  # a poll interval of a deadline loop
            n = self._count(where)
        return n


# --- Kafka inspection --------------------------------------------------------------------


def _consumer(settings: Settings, *, committed: bool = True) -> KafkaConsumer:
    return KafkaConsumer(
        **settings.kafka_client_config(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed" if committed else "read_uncommitted",
    )


def _partitions(consumer: KafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    return [
        TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())
    ]


def partition_counts(settings: Settings, topics: Iterable[str]) -> dict[str, int]:
    consumer = _consumer(settings)
    try:
        return {t: len(consumer.partitions_for_topic(t) or ()) for t in topics}
    finally:
        consumer.close()


def read_topics(
    settings: Settings,
    topics: Sequence[str],
    *,
    start: dict[TopicPartition, int] | None = None,
    timeout_s: float = 60.0,
) -> list[Any]:
    """Every committed record of ``topics`` (from ``start``, else the beginning) up to the
    last stable offset."""
    consumer = _consumer(settings)
    try:
        parts = _partitions(consumer, topics)
        consumer.assign(parts)
        for tp in parts:
            consumer.seek(tp, (start or {}).get(tp, 0))
        end = consumer.end_offsets(parts)
        records: list[Any] = []

        def done() -> bool:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
            return all(consumer.position(tp) >= end[tp] for tp in parts)

        wait_until(done, timeout_s=timeout_s, what=f"reading {', '.join(topics)}", interval_s=0)
        return records
    finally:
        consumer.close()


def open_transactions(settings: Settings, topics: Sequence[str]) -> int:
    """Partitions of ``topics`` with an open transaction (last stable offset behind the end)."""
    stable, raw = _consumer(settings), _consumer(settings, committed=False)
    try:
        parts = _partitions(stable, topics)
        lso, hw = stable.end_offsets(parts), raw.end_offsets(parts)
        return sum(1 for tp in parts if lso[tp] != hw[tp])
    finally:
        stable.close()
        raw.close()


def _admin(settings: Settings) -> KafkaAdminClient:
    return KafkaAdminClient(**settings.kafka_client_config())


def group_members(settings: Settings) -> int:
    """Members of the workers' group once it is stable; -1 while it rebalances or on error."""
    try:
        admin = _admin(settings)
    except Exception:
        return -1
    try:
        described = admin.describe_groups([settings.group_id])[settings.group_id]
    except Exception:
        return -1
    finally:
        admin.close()
    if str(described.get("group_state", described.get("state", ""))).lower() != "stable":
        return -1
    return len(described.get("members") or ())


def committed_offsets(settings: Settings) -> dict[TopicPartition, int]:
    """The workers' committed offsets: the group's, and those of any group named after it
    (a worker may consume a lane with a second group); the highest per partition."""
    admin = _admin(settings)
    try:
        groups = [
            g
            for g in (_group_name(x) for x in admin.list_groups())
            if g.startswith(settings.group_id)
        ]
        if not groups:
            return {}
        out: dict[TopicPartition, int] = {}
        for offsets in admin.list_group_offsets({g: None for g in groups}).values():
            for tp, meta in offsets.items():
                if meta is not None and meta.offset >= 0:
                    out[tp] = max(out.get(tp, 0), int(meta.offset))
        return out
    finally:
        admin.close()


def _group_name(group: Any) -> str:
    if isinstance(group, dict):
        return str(group.get("group_id") or group.get("group") or "")
    if isinstance(group, tuple):
        return str(group[0])
    return str(getattr(group, "group_id", group))


def unconsumed_records(settings: Settings) -> int:
    """Committed records on the topics the workers consume that the group has not committed
    past: after a drain there must be none (nothing stayed paused)."""
    layout = settings.topic_layout()
    return len(read_topics(settings, layout.consumed, start=committed_offsets(settings)))


# --- the run -------------------------------------------------------------------------------


@dataclass
class RunStats:
    """What happened during a run, besides the data."""

    seed: int = 0
    duration_s: float = 0.0
    drain_s: float | None = None  # first due -> every schedule final
    drain_timeout_s: float = 0.0  # allowed after the last fault
    faults: list[FaultEvent] = field(default_factory=list)
    process_exits: list[str] = field(default_factory=list)
    unconsumed_records: int | None = None
    open_transactions: int | None = None
    cleanup_runs: int = 0  # the retention option: cleanup runs and schedules deleted
    cleanup_deleted: int = 0
    manual_retries: int = 0
    cleanup_errors: list[str] = field(default_factory=list)


def count_not_final(dsn: str, ids: Sequence[int]) -> int:
    """Schedules among ``ids`` not in a final state (-1 while the database is unreachable)."""
    try:
        with connect(dsn) as conn:
            row = conn.execute(
                "SELECT count(*) AS n FROM flag_schedules WHERE id = ANY(%s) AND status <> ALL(%s)",
                (list(ids), list(FINAL)),
            ).fetchone()
    except psycopg.Error:
        return -1
    return int(row["n"]) if row else -1


def settle(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.25) -> bool:
    """Like ``wait_until`` but returns False at the deadline (the ledger reports it)."""
    try:
        wait_until(condition, timeout_s=timeout_s, interval_s=interval_s)
    except AssertionError:
        return False
    return True


def run_chaos(
    settings: Settings,
    make_workload: Callable[[psycopg.Connection[Any]], Workload],
    faults: Sequence[PlannedFault],
    *,
    log_dir: Path,
    devstack: DevStack | None = None,
    workers: int = 2,
    seed: int = 0,
    drain_timeout_s: float = 60.0,
    canary: bool = False,
    outage_s: float = 3.0,
    cleanup: CleanupChaos | None = None,
    hostile: HostileChaos | None = None,
) -> Ledger:
    """Start the workers, seed the workload (``make_workload``, once the group is up), run
    it with its faults, wait for the drain, and check the ledger.

    With ``cleanup``, retention runs every second from the first due time to the end of the
    drain, and an operator retries dead schedules by hand until the last fault. With
    ``hostile``, bad rows are seeded with the workload and records forged during the run."""
    started = time.time()
    dsn = settings.require_database_url()
    stats = RunStats(seed=seed, drain_timeout_s=drain_timeout_s)
    procs = Processes(settings, log_dir, f"s{seed}")
    try:
        for _ in range(workers):
            procs.start("worker")
        wait_until(
            lambda: group_members(settings) == workers,
            timeout_s=90,
            what=f"{workers} workers in the group",
            interval_s=0.2,
        )
        if cleanup is not None:
            cleanup.install()
        with connect(dsn) as conn:
            workload = _seed(conn, make_workload, hostile)
        with LockHolder(dsn, workload.locks):
            procs.start("dispatcher")
            procs.supervise()
            if cleanup is not None:
                cleanup.start(workload.ids)
            if hostile is not None:
                hostile.start()
            injector = Injector(
                settings, workload, procs, devstack, random.Random(seed), outage_s=outage_s
            )
            for fault in sorted(faults, key=lambda f: f.at_s):
                # Wait for the fault's planned moment: the schedule of faults is the test.
                threading.Event().wait(max(0.0, workload.first_due + fault.at_s - time.time()))
                injector.inject(fault.kind)
            stats.faults = injector.events
            if cleanup is not None:
                cleanup.stop_retries()  # retried rows must end again before the drain ends
            if settle(lambda: count_not_final(dsn, workload.ids) == 0, drain_timeout_s):
                stats.drain_s = round(time.time() - workload.first_due, 2)
            _settle_hostile(dsn, hostile)
            if cleanup is not None:
                cleanup.stop()
                workload.manual_retries = cleanup.manual_retries
                stats.cleanup_runs, stats.cleanup_deleted = cleanup.runs, cleanup.deleted
                stats.manual_retries = sum(len(v) for v in cleanup.manual_retries.values())
                stats.cleanup_errors = list(cleanup.errors)
        if canary and stats.drain_s is not None:
            with connect(dsn) as conn:
                groups = seed_canaries(conn, workload, settings)
            with LockHolder(dsn, groups):
                settle(lambda: count_not_final(dsn, workload.ids) == 0, 45.0)
        _settle_kafka(settings, stats)
    finally:
        if cleanup is not None:
            cleanup.stop()
        if hostile is not None:
            hostile.stop()
        procs.close()
        stats.process_exits = list(procs.exits)
    stats.open_transactions = _last(
        lambda: open_transactions(settings, _ledger_topics(settings)), timeout_s=30.0
    )
    stats.duration_s = round(time.time() - started, 2)
    return check_ledger(settings, workload, stats, hostile)


def _seed(
    conn: psycopg.Connection[Any],
    make_workload: Callable[[psycopg.Connection[Any]], Workload],
    hostile: HostileChaos | None,
) -> Workload:
    workload = make_workload(conn)
    if hostile is not None:
        hostile.seed_rows(conn, workload)
        workload.foreign_ids = hostile.foreign_ids()
    return workload


def _settle_hostile(dsn: str, hostile: HostileChaos | None) -> None:
    """Stop forging; the hostile rows (not in the workload's drain) end too."""
    if hostile is not None:
        hostile.stop()
        bad_rows = hostile.row_ids
        settle(lambda: count_not_final(dsn, bad_rows) == 0, 30.0)


def _ledger_topics(settings: Settings) -> list[str]:
    layout = settings.topic_layout()
    return [*layout.consumed, layout.dead_letter, layout.lifecycle]


def _last(value: Callable[[], int], timeout_s: float) -> int:
    """Poll ``value`` until it is 0 or the deadline passes; return the last value."""
    last = [value()]

    def zero() -> bool:
        last[0] = value()
        return last[0] == 0

    if last[0] != 0:
        settle(zero, timeout_s, interval_s=0.5)
    return last[0]


def _settle_kafka(settings: Settings, stats: RunStats) -> None:
    """With the workers still running: wait until they have consumed every record."""
    layout = settings.topic_layout()
    stats.unconsumed_records = _last(
        lambda: open_transactions(settings, layout.consumed) or unconsumed_records(settings),
        timeout_s=30.0,
    )


# --- the ledger ---------------------------------------------------------------------------


@dataclass
class Ledger:
    """Every schedule accounted for, from the database and the topics."""

    schedules: int = 0
    applied_once: int = 0
    dead: int = 0
    superseded: int = 0
    cancelled: int = 0
    lost: int = 0
    double_applied: int = 0
    attempts: int = 0
    retried: int = 0
    dead_letter_records: int = 0
    lifecycle_events: int = 0
    breaker_events: dict[str, int] = field(default_factory=dict)
    #: category -> final status -> schedules (with ``retried`` and ``attempts`` per category)
    categories: dict[str, dict[str, int]] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    #: fault kind (or "no fault") -> first-attempt lateness (ms) of the healthy schedules
    #: due during it (from its start to FAULT_AFTERMATH_S after its end)
    healthy_lateness: dict[str, dict[str, float | int]] = field(default_factory=dict)
    #: hostile case -> injected, unsent (a broker outage ate it) and as_expected counts
    hostile: dict[str, dict[str, int]] = field(default_factory=dict)
    stats: RunStats = field(default_factory=RunStats)
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No violation."""
        return not self.violations

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        out = asdict(self)
        out["ok"] = self.ok
        out["violation_count"] = len(self.violations)
        out["violations"] = self.violations[:500]
        return out

    def render(self, max_violations: int = 40) -> str:
        """A human summary."""
        s = self.stats
        faults = ", ".join(f"{k}={v}" for k, v in sorted(self.faults.items())) or "none"
        rate = f"{self.schedules / s.drain_s:.0f}/s" if s.drain_s else "n/a"
        lines = [
            f"chaos ledger (seed {s.seed}): {self.schedules} schedules in {s.duration_s:.1f}s"
            f" (first due -> all final: {s.drain_s if s.drain_s is not None else 'NOT DRAINED'}s,"
            f" {rate})",
            f"  faults injected   {faults}",
            f"  applied once      {self.applied_once}",
            f"  dead              {self.dead}",
            f"  superseded        {self.superseded}",
            f"  cancelled         {self.cancelled}",
            f"  lost              {self.lost}",
            f"  double-applied    {self.double_applied}",
            f"  attempts {self.attempts} ({self.retried} schedules retried), dead-letter records"
            f" {self.dead_letter_records}, lifecycle events {self.lifecycle_events},"
            f" unconsumed records {s.unconsumed_records}, open transactions {s.open_transactions},"
            f" breaker events {dict(sorted(self.breaker_events.items())) or '{}'}",
        ]
        if s.cleanup_runs:
            lines.append(
                f"  cleanup           {s.cleanup_runs} runs deleted {s.cleanup_deleted}"
                f" terminal schedules; {s.manual_retries} manual retries of dead ones"
            )
        for category, counts in sorted(self.categories.items()):
            lines.append(f"  {category:<16}  {dict(sorted(counts.items()))}")
        for case, counts in self.hostile.items():
            lines.append(f"  hostile {case:<24}  {counts}")
        lines.append(
            "  lateness of healthy schedules (first attempt start - due, ms) by the fault they"
            f" were due in (its start to {FAULT_AFTERMATH_S:.0f}s after its end):"
        )
        for kind, lat in self.healthy_lateness.items():
            lines.append(
                f"    {kind:<16}  n={lat['n']:<5} p50={lat['p50']:>7.0f}  p99={lat['p99']:>7.0f}"
                f"  max={lat['max']:>7.0f}"
            )
        for e in s.faults:
            lines.append(f"  fault {e.kind} at {e.at_s:+.1f}s ({e.took_s:.1f}s): {e.detail}")
        lines += [f"  process exit: {x}" for x in s.process_exits] or ["  process exits: none"]
        if self.violations:
            lines.append(f"  VIOLATIONS ({len(self.violations)}):")
            lines += [f"    - {v}" for v in self.violations[:max_violations]]
            if len(self.violations) > max_violations:
                lines.append(f"    ... and {len(self.violations) - max_violations} more")
        else:
            lines.append("  violations: none")
        return "\n".join(lines)


@dataclass
class _Evidence:
    rows: dict[int, dict[str, Any]]
    changes: dict[int, list[dict[str, Any]]]
    attempts: dict[int, list[dict[str, Any]]]
    flags: dict[str, dict[str, Any]]
    flag_changes: dict[str, list[dict[str, Any]]]
    dead_letters: dict[int, list[tuple[str | None, bytes | None]]]
    events: dict[int, Counter[str]]


def _gather(settings: Settings, w: Workload) -> tuple[_Evidence, int, int, dict[str, int]]:
    ids = w.ids
    with connect(settings.require_database_url()) as conn:
        rows = {
            int(r["id"]): dict(r)
            for r in conn.execute("SELECT * FROM flag_schedules WHERE id = ANY(%s)", (ids,))
        }
        changes: dict[int, list[dict[str, Any]]] = defaultdict(list)
        flag_changes: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in conn.execute(
            "SELECT * FROM flag_change_log WHERE flag_key = ANY(%s) OR schedule_id = ANY(%s)"
            " ORDER BY flag_key, version",
            (w.flags, ids),
        ):
            changes[int(r["schedule_id"])].append(dict(r))
            flag_changes[str(r["flag_key"])].append(dict(r))
        attempts: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for r in conn.execute(
            "SELECT * FROM schedule_retry_attempts WHERE schedule_id = ANY(%s)"
            " ORDER BY schedule_id, attempt",
            (ids,),
        ):
            attempts[int(r["schedule_id"])].append(dict(r))
        flags = {
            str(r["key"]): dict(r)
            for r in conn.execute("SELECT * FROM feature_flags WHERE key = ANY(%s)", (w.flags,))
        }
        # Rows retention deleted (the cleanup option) are accounted for from the archive.
        gone = archived(conn)
        for r in gone["flag_schedules"]:
            rows.setdefault(int(r["id"]), r)
        for r in gone["flag_change_log"]:
            changes[int(r["schedule_id"])].append(r)
            flag_changes[str(r["flag_key"])].append(r)
        for r in gone["schedule_retry_attempts"]:
            attempts[int(r["schedule_id"])].append(r)
        for group in (*flag_changes.values(), *changes.values()):
            group.sort(key=lambda c: int(c["version"]))
        for group in attempts.values():
            group.sort(key=lambda a: int(a["attempt"]))
    layout = settings.topic_layout()
    dead_letters: dict[int, list[tuple[str | None, bytes | None]]] = defaultdict(list)
    dlt = read_topics(settings, [layout.dead_letter])
    for rec in dlt:
        # json, not ScheduleDue: a forged record's id may be beyond what the model accepts
        sid = int(json.loads(rec.value)["schedule_id"])
        dead_letters[sid].append((header_map(rec).get(hdr.DLT_REASON), rec.key))
    events: dict[int, Counter[str]] = defaultdict(Counter)
    lifecycle = read_topics(settings, [layout.lifecycle])
    for rec in lifecycle:
        event = json.loads(rec.value)
        events[int(event["schedule_id"])][str(event["type"])] += 1
    breaker = Counter(
        str(json.loads(r.value)["state"])
        for r in read_topics(settings, [layout.control])
        if r.value
    )
    evidence = _Evidence(rows, changes, attempts, flags, flag_changes, dead_letters, events)
    return evidence, len(dlt), len(lifecycle), dict(breaker)


def check_ledger(
    settings: Settings,
    workload: Workload,
    stats: RunStats | None = None,
    hostile: HostileChaos | None = None,
) -> Ledger:
    """Account for every schedule of ``workload``, and for each hostile input where the
    rules say it ends; see docs/reliability.md for the rules."""
    stats = stats or RunStats()
    ev, n_dlt, n_events, breaker = _gather(settings, workload)
    ledger = Ledger(
        schedules=len(workload.ids),
        dead_letter_records=n_dlt,
        lifecycle_events=n_events,
        breaker_events=breaker,
        faults=dict(Counter(e.kind for e in stats.faults)),
        stats=stats,
    )
    v = ledger.violations
    v += stats.cleanup_errors
    for sid in workload.ids:
        row = ev.rows.get(sid)
        if row is not None and row.get("status_at_delete") not in (None, *FINAL):
            v.append(f"schedule {sid}: deleted by retention while {row['status_at_delete']}")
        if row is None:
            v.append(f"schedule {sid}: row missing")
            ledger.lost += 1
            continue
        status = str(row["status"])
        applied = len(ev.changes.get(sid, []))
        attempts = ev.attempts.get(sid, [])
        ledger.attempts += len(attempts)
        ledger.retried += len(attempts) > 1
        ledger.double_applied += max(0, applied - 1)
        ledger.lost += status not in FINAL
        ledger.applied_once += status == "applied" and applied == 1
        ledger.dead += status == "dead"
        ledger.superseded += status == "superseded"
        ledger.cancelled += status == "cancelled"
        per = ledger.categories.setdefault(workload.category[sid], {})
        for name, add in ((status, 1), ("attempts", len(attempts)), ("retried", len(attempts) > 1)):
            per[name] = per.get(name, 0) + int(add)
        retried_at = workload.manual_retries.get(sid, [])
        v += _check_final(sid, row, applied, ev, manually_retried=bool(retried_at))
        v += _check_due_order(sid, row, attempts)
        v += _check_attempts(sid, row, attempts, ev.changes.get(sid, []), retried_at)
        v += _check_expected(sid, row, attempts, workload)
    for sid in sorted(set(ev.dead_letters) - set(workload.ids) - workload.foreign_ids):
        v.append(f"dead-letter record for schedule {sid}, which is not in the workload")
    ledger.healthy_lateness = lateness_by_fault(workload, ev.rows, ev.attempts, stats.faults)
    if hostile is not None:
        ledger.hostile, hostile_violations = hostile.check(settings.require_database_url())
        v += hostile_violations
    extra, flag_violations = _check_flags(workload, ev)
    ledger.double_applied += extra
    v += flag_violations
    if stats.drain_s is None and stats.drain_timeout_s:
        v.append(f"not every schedule was final {stats.drain_timeout_s:.0f}s after the faults")
    if stats.unconsumed_records:
        v.append(f"{stats.unconsumed_records} records on consumed topics never consumed (paused?)")
    if stats.open_transactions:
        v.append(f"{stats.open_transactions} partitions still have an open transaction")
    return ledger


def lateness_by_fault(
    w: Workload,
    rows: dict[int, dict[str, Any]],
    attempts: dict[int, list[dict[str, Any]]],
    faults: Sequence[FaultEvent],
) -> dict[str, dict[str, float | int]]:
    """First-attempt lateness of the healthy schedules, grouped by the fault (the latest
    one started before it) whose window its due time falls in, else "no fault"."""
    windows = sorted(
        (w.first_due + f.at_s, w.first_due + f.at_s + f.took_s + FAULT_AFTERMATH_S, f.kind)
        for f in faults
    )
    by_kind: dict[str, list[float]] = defaultdict(list)
    for sid in w.of(HEALTHY):
        first = next((a for a in attempts.get(sid, []) if a["attempt"] == 1), None)
        if first is None or first["lateness_ms"] is None or sid not in rows:
            continue
        due = rows[sid]["scheduled_at"].timestamp()
        kind = "no fault"
        for lo, hi, k in windows:
            if lo <= due < hi:
                kind = k
        by_kind[kind].append(float(first["lateness_ms"]))
    order = ["no fault", *FAULT_KINDS]
    out = {k: _summary(by_kind[k]) for k in order if by_kind.get(k)}
    every = [v for k in order for v in by_kind.get(k, [])]
    if every:
        out[ALL_HEALTHY] = _summary(every)  # the figure a hostile run is compared on
    return out


def _summary(values: list[float]) -> dict[str, float | int]:
    ordered = sorted(values)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]

    return {"n": len(ordered), "p50": q(0.5), "p99": q(0.99), "max": ordered[-1]}


def _check_final(
    sid: int, row: dict[str, Any], applied: int, ev: _Evidence, *, manually_retried: bool = False
) -> list[str]:
    status, key = str(row["status"]), str(row["flag_key"])
    events, dlts = ev.events.get(sid, Counter()), ev.dead_letters.get(sid, [])
    out: list[str] = []
    if status not in FINAL:
        out.append(f"schedule {sid}: lost, still {status} after the drain")
    if applied > 1:
        out.append(f"schedule {sid}: applied {applied} times")
    if status == "applied" and applied != 1:
        out.append(f"schedule {sid}: applied but {applied} changes in the flag's history")
    if status != "applied" and applied:
        out.append(f"schedule {sid}: {status} but it changed the flag")
    lifecycle_type = {
        "applied": "applied",
        "dead": "dead_lettered",
        "superseded": "superseded",
        "cancelled": "cancelled",
    }
    if status in lifecycle_type and not events[lifecycle_type[status]]:
        out.append(f"schedule {sid}: {status} without a {lifecycle_type[status]} lifecycle event")
    if status == "dead":
        if not row["last_error"]:
            out.append(f"schedule {sid}: dead without last_error")
        if not dlts:
            out.append(f"schedule {sid}: dead but no dead-letter record")
        for reason, rec_key in dlts:
            if not reason or rec_key != key.encode():
                out.append(f"schedule {sid}: dead-letter record reason={reason} key={rec_key!r}")
    elif dlts and not manually_retried:  # a retried dead schedule may apply afterwards
        out.append(f"schedule {sid}: {len(dlts)} dead-letter records but status {status}")
    return out


def _check_due_order(sid: int, row: dict[str, Any], attempts: list[dict[str, Any]]) -> list[str]:
    """Superseding is for stale retries (issue 18): a schedule that never failed takes
    effect in due order, whatever order its flag's wake-ups arrived in."""
    if row["status"] == "superseded" and not any(a["outcome"] == "retry" for a in attempts):
        return [f"schedule {sid}: superseded, but no attempt of it ever failed"]
    return []


_OUTCOME = {
    "applied": "applied",
    "dead": "dead",
    "superseded": "superseded",
    "cancelled": "cancelled",
}


def _check_attempts(
    sid: int,
    row: dict[str, Any],
    attempts: list[dict[str, Any]],
    changes: list[dict[str, Any]],
    retried_at: Sequence[int] = (),
) -> list[str]:
    """Attempts 1..n without gaps, only the last one final (or dead and then retried by
    hand: ``retried_at``), matching the schedule's state."""
    out: list[str] = []
    numbers = [int(a["attempt"]) for a in attempts]
    if numbers != list(range(1, len(numbers) + 1)):
        out.append(f"schedule {sid}: attempts not contiguous: {numbers}")
    status = str(row["status"])
    if status in _OUTCOME:
        if not attempts or attempts[-1]["outcome"] != _OUTCOME[status]:
            out.append(f"schedule {sid}: {status} but last attempt is {attempts[-1:]}")
        if row["finished_attempt"] != len(attempts):
            out.append(
                f"schedule {sid}: finished_attempt {row['finished_attempt']} of {len(attempts)}"
            )
    for a in attempts[:-1]:
        manual = a["outcome"] == "dead" and int(a["attempt"]) in retried_at
        if a["outcome"] != "retry" and not manual:
            out.append(f"schedule {sid}: attempt {a['attempt']} {a['outcome']} is not the last")
    if changes and attempts and int(changes[0]["attempt"]) != len(attempts):
        out.append(f"schedule {sid}: applied by attempt {changes[0]['attempt']} of {len(attempts)}")
    return out + _check_timing(sid, attempts, retried_at)


def _check_timing(
    sid: int, attempts: list[dict[str, Any]], retried_at: Sequence[int] = ()
) -> list[str]:
    """No attempt consumed by a fault, none early, every retry at or after its plan."""
    out: list[str] = []
    for a in attempts:
        if a["outcome"] == "retry" and a["error_class"] != _TRANSIENT_CLASS:
            out.append(f"schedule {sid}: attempt {a['attempt']} consumed by {a['error_class']}")
        if a["lateness_ms"] is not None and a["lateness_ms"] < 0:
            out.append(
                f"schedule {sid}: attempt {a['attempt']} ran {-a['lateness_ms']:.0f} ms early"
            )
    for prev, nxt in itertools.pairwise(attempts):
        if int(prev["attempt"]) in retried_at:
            continue  # re-armed by hand: due when the operator said, not by a plan
        planned = prev["next_attempt_at"]
        if planned is None or nxt["started_at"] < planned:
            out.append(
                f"schedule {sid}: attempt {nxt['attempt']} started {nxt['started_at']}"
                f" before its planned {planned}"
            )
    return out


def _check_expected(
    sid: int,
    row: dict[str, Any],
    attempts: list[dict[str, Any]],
    w: Workload,
) -> list[str]:
    category, status, n = w.category[sid], str(row["status"]), len(attempts)
    if category in (HEALTHY, CANARY) and (status, n) != ("applied", 1):
        return [f"schedule {sid} ({category}): {status} after {n} attempts, expected applied on 1"]
    if category == PERMANENT:
        expected = w.expected_error.get(sid)
        reason = attempts[-1]["dlt_reason"] if attempts else None
        got = (status, n, reason, row["last_error_class"])
        # Each manual retry adds one attempt, which fails permanently again.
        manual = w.manual_retries.get(sid, [])
        if got != ("dead", 1 + len(manual), "permanent", expected):
            seen = [(a["attempt"], a["outcome"]) for a in attempts]
            return [
                f"schedule {sid} (permanent {expected}): got {got}, attempts {seen},"
                f" retried by hand at {manual}"
            ]
    if category == CANARY_LOCKED and status != "applied":
        return [f"schedule {sid} (canary through the tiers): {status} after {n} attempts"]
    if category in _RETRYABLE_CATEGORIES and status == "dead":
        reason = attempts[-1]["dlt_reason"] if attempts else None
        if reason != "exhausted":
            return [f"schedule {sid} ({category}): dead with reason {reason}, expected exhausted"]
    return []


def _check_flags(w: Workload, ev: _Evidence) -> tuple[int, list[str]]:
    """Each flag's version counts its recorded changes, its state is the last one's, and
    that state is its applied and superseded schedules' updates in due order."""
    extra, out = 0, []
    by_flag: dict[str, list[dict[str, Any]]] = {}
    for row in ev.rows.values():
        if row["status"] in ("applied", "superseded"):
            by_flag.setdefault(str(row["flag_key"]), []).append(row)
    for key in w.flags:
        flag = ev.flags.get(key)
        if flag is None:
            continue
        changes = ev.flag_changes.get(key, [])
        versions = [int(c["version"]) for c in changes]
        if int(flag["version"]) != 1 + len(changes):
            extra += max(0, int(flag["version"]) - 1 - len(changes))
            out.append(f"flag {key}: version {flag['version']} but {len(changes)} recorded changes")
        if versions != list(range(2, 2 + len(versions))):
            out.append(f"flag {key}: change versions {versions}")
        state = {k: flag[k] for k in _STATE}
        if changes and state != changes[-1]["after"]:
            out.append(f"flag {key}: state {state} is not its last change {changes[-1]['after']}")
        # Per-field ordering: whatever order the schedules arrived in, the flag ends as
        # if its applied and superseded schedules had applied in due order.
        expected = dict(_INITIAL)
        for row in sorted(by_flag.get(key, []), key=lambda r: (r["scheduled_at"], r["id"])):
            expected.update(row["updates"])
        if state != expected:
            out.append(f"flag {key}: state {state}, but its schedules in due order give {expected}")
    return extra, out


_STATE = ("enabled", "rollout_percentage", "config")
#: A workload flag as inserted (the table's defaults).
_INITIAL: dict[str, Any] = {"enabled": False, "rollout_percentage": 0, "config": {}}


# --- helpers for callers --------------------------------------------------------------------


def new_run_id(rng: random.Random) -> str:
    """A short id for flag keys and process names."""
    return f"c{rng.getrandbits(32):08x}"


@contextlib.contextmanager
def quiet_kafka_logs() -> Iterator[None]:
    """kafka-python logs every refused connection at ERROR during a broker outage."""
    kafka_log = logging.getLogger("kafka")
    old = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        kafka_log.setLevel(old)
