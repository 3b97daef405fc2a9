"""8. Membership: lateness of healthy schedules while workers crash, restart, scale out and in.

Two static workers (``FLAGSCHED_WORKER_ID`` = their label) under a steady load of
normal schedules plus a critical one every 0.25 s (the priority lane), then, in
one run, each fault in turn (:data:`PLAN`):

* ``crash``: SIGKILL of worker-1; nothing replaces it;
* ``crash_rejoin``: worker-1 starts again with its id after its session expired (a join);
* ``crash_replaced``: SIGKILL of worker-1 and a replacement with a *new* id (worker-2)
  at once, as a Deployment would: the join waits for the dead member's session;
* ``restart``: SIGKILL of worker-0 and a new process with the same id at once (a
  container restarted in its pod, a StatefulSet pod): a static member back;
* ``scale_out``: worker-3 and worker-4 join (2 -> 4);
* ``scale_in``: worker-3 and worker-4 get SIGTERM (4 -> 2).

A thread asks the group coordinator every 100 ms who owns what (both groups); the
workers log each group generation they join. Per fault, the first attempts of
schedules due in the fault's window are split by the partition they came through:
the victim's (as owned just before the fault) or the others'. Lateness is
flagsched's own ``schedule_retry_attempts.lateness_ms`` (attempt start - due).
Targets are issue 12's; see docs/benchmarks.md.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bench.group_watch import Members, Owned, Watcher
from bench.harness import Proc, World, consumed_partitions, wait_workers_ready, world
from bench.stats import percentile, summary
from bench.suite import Context, Result
from bench.workload import add_flags, add_schedules, flag_keys, utcnow

log = logging.getLogger("bench")

NAME = "membership"
RATE_PER_S = 50.0
CRITICAL_EVERY_S = 0.25
SESSION_TIMEOUT_S = 6.0
POLL_S = 0.1  # the worker's longest poll wait: "plus one poll"
#: (fault, seconds after the first due time, window length)
#: (fault, seconds after the first due time, window length): what _inject does when.
#: A window ends a second before the next fault, whose victims' backlog is not its own.
PLAN = (
    ("crash", 10.0, 6.0),
    ("crash_rejoin", 17.0, 7.0),
    ("crash_replaced", 25.0, 8.0),
    ("restart", 34.0, 8.0),
    ("scale_out", 43.0, 8.0),
    ("scale_in", 52.0, 8.0),
)
LOAD_S = 62.0
FAULTS = ("crash", "restart", "scale_out", "scale_in")

_GEN_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO \S+: worker \S+ (normal|priority) lane:"
    r" group \S+ generation (\d+)"
)
_START_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO \S+: worker \S+ starting")


@dataclass
class Fault:
    """One injected fault: when, which workers it hit or added, what they owned."""

    kind: str
    at: float
    window_s: float
    victims: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    spawned_at: dict[str, float] = field(default_factory=dict)
    owned: dict[str, Owned] = field(default_factory=dict)  # group -> victims' partitions
    old_ids: dict[str, set[str]] = field(default_factory=dict)  # group -> victims' member ids


def run(ctx: Context) -> Result:
    res = Result(NAME)
    with world(ctx.services, NAME, ctx.raw_dir) as w, w.connect() as conn:
        groups = [w.settings.group_id, f"{w.settings.group_id}.priority"]
        keys, crit = flag_keys(400), flag_keys(100, "crit")
        add_flags(conn, keys + crit)
        with Watcher(w.services.kafka, groups) as watch:
            workers = {f"worker-{i}": w.worker(f"worker-{i}") for i in range(2)}
            wait_workers_ready(w, list(workers.values()), consumed_partitions(w))
            # The dispatcher first: its start-up (seconds on a busy machine) is no fault.
            d = w.dispatcher()
            _wait_log(d, "dispatcher publishing")
            start = utcnow() + timedelta(seconds=3)
            n = add_schedules(conn, _load(keys, crit, start))
            t0 = start.timestamp()
            faults = _inject(w, workers, watch, groups, t0)
            _wait_final(conn, n, timeout_s=90)
        rows = _first_attempts(conn)
        logs = {label: p.log_text() for label, p in workers.items()}
    baseline = [lat for due, _, _, lat, _ in rows if t0 + 3 <= due < t0 + PLAN[0][1]]
    base_crit = [lat for due, _, _, lat, pr in rows if t0 + 3 <= due < t0 + PLAN[0][1] and pr]
    base_p99 = percentile(baseline, 99)
    res.row(f"no fault: first attempts p99 ({len(baseline)})", base_p99, "ms")
    res.row(f"no fault: critical p99 ({len(base_crit)})", percentile(base_crit, 99), "ms")
    details: dict[str, Any] = {
        "no_fault_ms": summary(baseline),
        "no_fault_critical_ms": summary(base_crit),
    }
    for fault in faults:
        details[fault.kind] = _report(res, fault, rows, watch, groups, logs, base_p99)
    res.details = details
    res.notes.append(
        f"2 static workers, {RATE_PER_S:.0f} normal schedules/s for {LOAD_S:.0f}s plus a critical"
        f" one every {CRITICAL_EVERY_S}s; session {SESSION_TIMEOUT_S:.0f}s, heartbeat 0.5s,"
        " cooperative-sticky; a fault's window ends a second before the next fault."
        " 'New worker owns' counts from the process spawn (Python start-up included) and,"
        " in brackets, from its 'starting' log line."
    )
    return res


def _load(keys: list[str], crit: list[str], start: datetime) -> list[tuple[str, datetime, str]]:
    out = []
    n = int(RATE_PER_S * LOAD_S)
    for i in range(n):
        out.append((keys[i % len(keys)], start + timedelta(seconds=i / RATE_PER_S), "normal"))
    for i in range(int(LOAD_S / CRITICAL_EVERY_S)):
        due = start + timedelta(seconds=i * CRITICAL_EVERY_S)
        out.append((crit[i % len(crit)], due, "critical"))
    return out


def _inject(
    w: World, workers: dict[str, Proc], watch: Watcher, groups: list[str], t0: float
) -> list[Fault]:
    victims = {
        "crash": ["worker-1"],
        "crash_replaced": ["worker-1"],
        "restart": ["worker-0"],
        "scale_in": ["worker-3", "worker-4"],
    }
    added = {
        "crash_rejoin": ["worker-1"],  # the same id, after its session expired: a join
        "crash_replaced": ["worker-2"],  # a replacement with a new id, at once
        "restart": ["worker-0"],  # the same id, at once: a static member back
        "scale_out": ["worker-3", "worker-4"],
    }
    faults = []
    for kind, at_s, window_s in PLAN:
        _sleep_until(t0 + at_s)
        fault = Fault(kind, time.time(), window_s, victims=victims.get(kind, []))
        _record_owned(fault, watch, groups)
        for label in fault.victims:
            if kind == "scale_in":
                workers[label].popen.terminate()
            else:
                workers[label].popen.kill()
        for label in fault.victims:
            workers[label].popen.wait(timeout=30)
        for label in added.get(kind, []):
            _spawn(w, workers, fault, label)
        faults.append(fault)
    _sleep_until(t0 + LOAD_S + 2)
    return faults


def _spawn(w: World, workers: dict[str, Proc], fault: Fault, label: str) -> None:
    """A worker process with the id ``label``; its log is named after the fault."""
    fault.added.append(label)
    fault.spawned_at[label] = time.time()
    args = [sys.executable, "-m", "flagsched.cli", "worker"]
    workers[label] = w.start(args, f"{label}.{fault.kind}", w.env(FLAGSCHED_WORKER_ID=label))


def _record_owned(fault: Fault, watch: Watcher, groups: list[str]) -> None:
    for group in groups:
        owned: set[tuple[str, int]] = set()
        fault.old_ids[group] = set()
        for label in fault.victims:
            member_id, parts = watch.before(group, label, fault.at)
            owned |= parts
            fault.old_ids[group].add(member_id)
        fault.owned[group] = frozenset(owned)


def _report(
    res: Result,
    fault: Fault,
    rows: list[tuple[float, str, int, float, bool]],
    watch: Watcher,
    groups: list[str],
    logs: dict[str, str],
    base_p99: float | None,
) -> dict[str, Any]:
    lo, hi = fault.at, fault.at + fault.window_s
    owned = fault.owned.get(groups[0], frozenset()) | fault.owned.get(groups[1], frozenset())
    window = [r for r in rows if lo <= r[0] < hi]
    theirs = [r[3] for r in window if (r[1], r[2]) in owned]
    others = [r[3] for r in window if (r[1], r[2]) not in owned]
    crit = [r[3] for r in window if r[4]]
    every = [r[3] for r in window]
    k = fault.kind
    out: dict[str, Any] = {
        "victims": fault.victims,
        "added": fault.added,
        "others_ms": summary(others),
        "victims_ms": summary(theirs),
        "critical_ms": summary(crit),
        "latest": [
            {"due_s": round(r[0] - fault.at, 2), "topic": r[1], "partition": r[2], "ms": r[3]}
            for r in sorted(window, key=lambda r: -r[3])[:8]
        ],
    }
    if k in ("crash", "crash_replaced"):
        label = k.replace("_", " ")
        ceiling = 1.5 * base_p99 if base_p99 else 0.0
        res.at_most(
            f"{label}: survivors' partitions p99 ({len(others)})",
            percentile(others, 99),
            "ms",
            ceiling,
            f"<= 1.5x no fault ({ceiling:.0f})",
        )
        res.row(f"{label}: survivors' partitions max", _max(others), "ms")
        res.row(f"{label}: dead worker's partitions max ({len(theirs)})", _max(theirs), "ms")
        res.row(f"{label}: critical max ({len(crit)})", _max(crit), "ms")
    if k in ("crash", "crash_replaced", "scale_in"):
        crashed = k != "scale_in"
        limit = SESSION_TIMEOUT_S + POLL_S if crashed else 1.0
        target = f"<= {limit:g} s" + (" (session + one poll)" if crashed else "")
        for group, lane in zip(groups, ("normal", "priority"), strict=True):
            took = watch.first(group, fault.at, _handed_over(fault.victims, fault.owned[group]))
            out[f"handover_{lane}_s"] = took
            what = "dead worker's partitions owned again" if crashed else "SIGTERM handover"
            res.at_most(f"{k.replace('_', ' ')}: {what}, {lane} group", took, "s", limit, target)
    if k == "restart":
        rebalances = _rebalances(logs, fault.at, fault.at + fault.window_s, exclude=fault.victims)
        out["rebalances_seen_by_others"] = rebalances
        res.row(
            "restart: rebalances seen by the other worker",
            rebalances,
            "",
            target="0",
            met=rebalances == 0,
            gap="" if rebalances == 0 else f"missed: {rebalances} generation changes",
        )
        res.at_most(
            f"restart: lateness p99 ({len(every)})", percentile(every, 99), "ms", 1000, "<= 1000"
        )
        res.row(f"restart: restarted worker's partitions max ({len(theirs)})", _max(theirs), "ms")
        res.row(
            f"restart: other worker's partitions p99 ({len(others)})", percentile(others, 99), "ms"
        )
        res.row(f"restart: critical max ({len(crit)})", _max(crit), "ms")
    if k in ("scale_out", "scale_in", "crash_rejoin"):
        label = k.replace("_", " ")
        res.at_most(f"{label}: max lateness ({len(every)})", _max(every), "ms", 2000, "<= 2000")
        res.row(f"{label}: critical max ({len(crit)})", _max(crit), "ms")
    if fault.added:
        for group, lane in zip(groups, ("normal", "priority"), strict=True):
            spawn = max(
                (
                    watch.first(
                        group, fault.spawned_at[a], _owns(a, fault.old_ids.get(group, set()))
                    )
                    or float("nan")
                )
                for a in fault.added
            )
            up = max(_since_start(logs.get(a, ""), fault.spawned_at[a]) for a in fault.added)
            out[f"owns_{lane}_s"] = {"from_spawn": spawn, "from_start_log": spawn - up}
            res.at_most(
                f"{k.replace('_', ' ')}: new worker owns {lane} partitions",
                spawn,
                "s",
                3.0,
                "<= 3 s",
                note=f"({spawn - up:.2f} s from its start-up log line)",
            )
    return out


def _handed_over(victims: list[str], owned: Owned) -> Any:
    def test(state: str, members: Members) -> bool:
        live = set().union(*(p for m, (_, p) in members.items() if m not in victims))
        return state == "Stable" and not any(v in members for v in victims) and owned <= live

    return test


def _owns(instance: str, old_ids: set[str]) -> Any:
    """A new member (not one of ``old_ids``: a restarted static member replaces the dead
    one's member id) with ``instance`` as its id owns partitions."""

    def test(state: str, members: Members) -> bool:
        member_id, parts = members.get(instance, ("", frozenset()))
        return state == "Stable" and bool(parts) and member_id not in old_ids

    return test


def _rebalances(logs: dict[str, str], lo: float, hi: float, *, exclude: Iterable[str]) -> int:
    n = 0
    for label, text in logs.items():
        if label in exclude:
            continue
        for line in text.splitlines():
            m = _GEN_LINE.match(line)
            if m and lo <= _epoch(m.group(1)) < hi:
                n += 1
    return n


def _since_start(text: str, spawned: float) -> float:
    """Seconds from ``spawned`` to the worker's last 'starting' log line after it."""
    starts = [_epoch(m.group(1)) for m in map(_START_LINE.match, text.splitlines()) if m]
    after = [s for s in starts if s >= spawned - 1]
    return (after[-1] - spawned) if after else 0.0


def _epoch(stamp: str) -> float:
    return time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + int(stamp[20:]) / 1000


def _first_attempts(conn: Any) -> list[tuple[float, str, int, float, bool]]:
    """(due epoch, topic, partition, lateness ms, critical) of every first attempt."""
    got = conn.execute(
        "SELECT extract(epoch FROM s.scheduled_at), a.topic, a.kafka_partition, a.lateness_ms,"
        " s.priority = 'critical' FROM schedule_retry_attempts a"
        " JOIN flag_schedules s ON s.id = a.schedule_id"
        " WHERE a.attempt = 1 AND a.lateness_ms IS NOT NULL"
    ).fetchall()
    return [(float(r[0]), str(r[1]), int(r[2]), float(r[3]), bool(r[4])) for r in got]


def _wait_final(conn: Any, n: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT count(*) FROM flag_schedules WHERE status IN"
            " ('applied', 'dead', 'superseded', 'cancelled')"
        ).fetchone()
        if row and int(row[0]) >= n:
            return
        time.sleep(0.5)
    log.warning("membership: not every schedule final after %.0fs", timeout_s)


def _wait_log(proc: Proc, text: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in proc.log_text():
        if not proc.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{proc.label} did not start: {proc.log_text()[-2000:]}")
        time.sleep(0.05)


def _sleep_until(at: float) -> None:
    time.sleep(max(0.0, at - time.time()))


def _max(values: list[float]) -> float | None:
    return max(values) if values else None
