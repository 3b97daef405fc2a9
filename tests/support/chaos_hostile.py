"""Hostile inputs mixed into a chaos run (issue 11): ``bench.chaos --hostile-percent``.

About ``percent`` % of the workload's size in bad rows and forged records, cycling
through the cases of tests/integration/test_hostile.py that the harness can inject
cheaply:

* rows written as before migration 0005 (the CHECK dropped for the insert and put back
  ``NOT VALID``), ``pending``: a bad ``flag_key``, ``updates`` nested 100 deep and a
  ``retry_policy`` with an unknown key. The dispatcher retires each (dead,
  ``invalid_schedule``, no dead letter): the first breaks the event's model, the CHECKs
  refuse to mark the others dispatched. (The worker's side of the last two, a row
  changed after dispatch, needs an ``ALTER TABLE`` mid-run, which would stall every
  healthy schedule: tests/integration/test_hostile.py covers it.)
* forged schedule-due records on the due topic, each keyed by a healthy flag of the
  workload so it lands in a healthy partition: one naming a victim schedule of another
  flag (poison; the victim applies once by its own record), one with a ``schedule_id``
  of 2^63 or more (poison), one due in the year 2100 (poison at once);
* forged ``open`` events on the control topic (with CR/LF in ``worker_id``), one every
  ``open_every_s`` (0: none), which must not keep the group paused.

None of these is in :attr:`Workload.category`: the healthy-schedule checks and the
lateness figures leave them out, and :meth:`HostileChaos.check` checks that each ended
where docs/reliability.md ("Hostile inputs") says.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from kafka import KafkaProducer

from flagsched.runtime.settings import Settings
from flagsched.schemas import headers as hdr
from flagsched.schemas.headers import RecordHeaders
from tests.support.chaos import Workload, read_topics
from tests.support.hostile import as_before_0005
from tests.support.pipeline import connect, header_map

log = logging.getLogger(__name__)

#: The cases, in the order they are handed out.
CASES = (
    "bad_flag_key",
    "flag_mismatch",
    "deep_updates",
    "huge_schedule_id",
    "retry_policy_unknown_key",
    "far_future_due",
)
_ROW_CASES = ("bad_flag_key", "deep_updates", "retry_policy_unknown_key")
#: What each case must end as: (status of its row or None, dead-letter reason or None,
#: error class, a fragment of the error message).
EXPECTED: dict[str, tuple[str | None, str | None, str, str]] = {
    "bad_flag_key": ("dead", None, "invalid_schedule", "flag_key"),
    "deep_updates": ("dead", None, "invalid_schedule", "flag_schedules_updates_bounded"),
    "retry_policy_unknown_key": ("dead", None, "invalid_schedule", "retry_policy_shape"),
    "flag_mismatch": ("applied", "poison", "poison", "but schedule"),
    "huge_schedule_id": (None, "poison", "poison", "schedule_id"),
    "far_future_due": (None, "poison", "poison", "beyond what"),
}
_YEAR_2100_MS = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp() * 1000)
_BAD_KEY = "bad key\r\n\x1b[31mforged"
_DEEP = '{"config": ' + '{"a": ' * 100 + "1" + "}" * 101


@dataclass
class HostileInput:
    """One injected input and what is known of it afterwards."""

    case: str
    schedule_id: int | None = None  # its row, or the id its forged record names
    event_id: str | None = None  # a forged record's, to find its dead letter
    send_at: float = 0.0
    record: tuple[bytes, bytes, list[tuple[str, bytes]]] | None = None
    sent: bool = False


@dataclass
class HostileChaos:
    """Seeds the bad rows, forges the records during the run, checks where each ended."""

    settings: Settings
    percent: float
    seed: int = 0
    open_every_s: float = 10.0
    inputs: list[HostileInput] = field(default_factory=list)
    forged_open: int = 0
    send_errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._forge, name="hostile-forger", daemon=True)

    @property
    def row_ids(self) -> list[int]:
        """Rows of the database this injected (bad rows and victims)."""
        return [
            i.schedule_id
            for i in self.inputs
            if i.schedule_id is not None and EXPECTED[i.case][0] is not None
        ]

    def foreign_ids(self) -> set[int]:
        """Schedule ids with dead letters the healthy-schedule ledger must not claim."""
        return {i.schedule_id for i in self.inputs if i.schedule_id is not None}

    def seed_rows(self, conn: psycopg.Connection[Any], w: Workload) -> None:
        """Insert the bad rows and victims (due like the workload) and plan the forgeries."""
        rng = random.Random(self.seed ^ 0x4057)
        n = max(len(CASES), round(len(w.ids) * self.percent / 100))
        healthy_keys = [k for k in w.flags if k.startswith(f"{w.run_id}.h")]
        spread = w.last_due - w.first_due
        for i in range(n):
            case = CASES[i % len(CASES)]
            due = w.first_due + rng.uniform(0.05, 0.95) * spread
            item = HostileInput(case)
            if case in _ROW_CASES or case == "flag_mismatch":
                item.schedule_id = self._insert_row(conn, w, case, i, due)
            if case == "huge_schedule_id":
                item.schedule_id = 2**63 + i
            if case == "far_future_due":
                item.schedule_id = 9_000_000_000 + i  # no such row: poison before any lookup
            if case not in _ROW_CASES:
                assert item.schedule_id is not None
                item.event_id = str(uuid.uuid4())
                due_ms = _YEAR_2100_MS if case == "far_future_due" else int(due * 1000) + 300
                item.record = _due_record(
                    item.schedule_id, rng.choice(healthy_keys), due, item.event_id, due_ms
                )
                item.send_at = due - 1.0  # as the dispatcher would, shortly before due
            self.inputs.append(item)

    def _insert_row(
        self, conn: psycopg.Connection[Any], w: Workload, case: str, i: int, due: float
    ) -> int:
        at = datetime.fromtimestamp(due, UTC)
        insert = (
            "INSERT INTO flag_schedules (flag_key, updates, scheduled_at, retry_policy)"
            " VALUES (%s, %s::jsonb, %s, %s::jsonb) RETURNING id"
        )
        key, updates, policy = f"{w.run_id}.x{i}", '{"enabled": true}', None
        constraint = None
        if case == "bad_flag_key":
            key, constraint = _BAD_KEY, "flag_schedules_flag_key_pattern"
        elif case == "deep_updates":
            updates, constraint = _DEEP, "flag_schedules_updates_bounded"
        elif case == "retry_policy_unknown_key":
            policy, constraint = '{"max_retriez": 2}', "flag_schedules_retry_policy_shape"
        if case != "bad_flag_key":
            conn.execute("INSERT INTO feature_flags (key) VALUES (%s)", (key,))
        if constraint is None:
            row = conn.execute(insert, (key, updates, at, policy)).fetchone()
        else:
            with as_before_0005(conn, constraint):
                row = conn.execute(insert, (key, updates, at, policy)).fetchone()
        assert row is not None
        return int(row["id"])

    def start(self) -> None:
        """Forge the planned records at their moments, and an ``open`` event now and then."""
        self._thread.start()

    def stop(self) -> None:
        """Stop forging (records not sent by now are left out of the checks)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _forge(self) -> None:
        layout = self.settings.topic_layout()
        # The product's client config: with kafka-python's own reconnect backoff (up to
        # 30 s) a send after the broker restart timed out, and counted as a violation.
        producer = KafkaProducer(**self.settings.kafka_client_config(), retries=10)
        planned = sorted((i for i in self.inputs if i.record), key=lambda i: i.send_at)
        next_open = time.time()
        try:
            while not self._stop.is_set():
                now = time.time()
                if planned and planned[0].send_at <= now:
                    item = planned.pop(0)
                    assert item.record is not None
                    key, value, headers = item.record
                    item.sent = self._send(producer, layout.due, key, value, headers)
                    continue
                if self.open_every_s and now >= next_open:
                    next_open = now + self.open_every_s
                    self.forged_open += self._send(
                        producer, layout.control, b"breaker", _open_event(), []
                    )
                    continue
                wake = min(
                    [
                        next_open if self.open_every_s else now + 1.0,
                        *(p.send_at for p in planned[:1]),
                    ]
                )
                self._stop.wait(max(0.0, wake - time.time()))  # the forger's own schedule
        finally:
            producer.close(timeout=10)

    def _send(
        self,
        producer: KafkaProducer,
        topic: str,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, bytes]],
    ) -> bool:
        try:
            producer.send(topic, key=key, value=value, headers=headers).get(timeout=30)
        except Exception as exc:  # a broker restart (a fault of the run): report, go on
            self.send_errors.append(f"{topic}: {type(exc).__name__}: {exc}")
            return False
        return True

    def check(self, dsn: str) -> tuple[dict[str, dict[str, int]], list[str]]:
        """Per case: injected, sent, as expected; and a violation for each that is not."""
        with connect(dsn) as conn:
            rows = {
                int(r["id"]): r
                for r in conn.execute(
                    "SELECT id, status, last_error_class, last_error FROM flag_schedules"
                    " WHERE id = ANY(%s)",
                    (self.row_ids,),
                )
            }
        by_event: dict[str, dict[str, str]] = {}
        by_id: dict[int, list[dict[str, str]]] = {}
        for rec in read_topics(self.settings, [self.settings.topic_layout().dead_letter]):
            try:
                value = json.loads(rec.value)
            except (TypeError, ValueError):
                continue
            headers = header_map(rec)
            by_event[str(value.get("event_id"))] = headers
            if isinstance(value.get("schedule_id"), int):
                by_id.setdefault(int(value["schedule_id"]), []).append(headers)
        summary: dict[str, dict[str, int]] = {}
        violations: list[str] = []
        for item in self.inputs:
            counts = summary.setdefault(item.case, {"injected": 0, "unsent": 0, "as_expected": 0})
            counts["injected"] += 1
            if item.record is not None and not item.sent:
                counts["unsent"] += 1
                continue
            problem = self._problem(item, rows, by_event, by_id)
            if problem:
                violations.append(f"hostile {item.case} (schedule {item.schedule_id}): {problem}")
            else:
                counts["as_expected"] += 1
        summary["forged_open_events"] = {"injected": self.forged_open}
        return summary, violations + [f"hostile forger: {e}" for e in self.send_errors[:5]]

    def _problem(
        self,
        item: HostileInput,
        rows: dict[int, dict[str, Any]],
        by_event: dict[str, dict[str, str]],
        by_id: dict[int, list[dict[str, str]]],
    ) -> str | None:
        status, reason, error_class, fragment = EXPECTED[item.case]
        assert item.schedule_id is not None
        if status is not None:
            row = rows.get(item.schedule_id)
            if row is None or row["status"] != status:
                return f"row {row and row['status']}, expected {status}"
            if item.record is None and row["last_error_class"] != error_class:
                return f"last_error_class {row['last_error_class']}, expected {error_class}"
            if item.record is None and fragment not in str(row["last_error"]):
                return f"last_error {row['last_error']!r} lacks {fragment!r}"
        if reason is None:
            if by_id.get(item.schedule_id):
                return "dead-lettered, but the dispatcher should retire it without a record"
            return None
        dead = by_event.get(item.event_id or "") if item.record else None
        if dead is None and item.record is None:
            dead = next(iter(by_id.get(item.schedule_id, [])), None)
        if dead is None:
            return f"no dead letter (expected reason {reason})"
        got = (dead.get(hdr.DLT_REASON), dead.get(hdr.ERROR_CLASS))
        if got != (reason, error_class) or fragment not in dead.get(hdr.ERROR_MESSAGE, ""):
            return f"dead letter {got} {dead.get(hdr.ERROR_MESSAGE)!r}, expected {reason}"
        return None


def _due_record(
    schedule_id: int, flag_key: str, due: float, event_id: str, due_ms: int
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    at = datetime.fromtimestamp(due, UTC).isoformat()
    value = {
        "schema_version": 1,
        "event_id": event_id,
        "schedule_id": schedule_id,
        "flag_key": flag_key,
        "scheduled_at": at,
        "priority": "normal",
        "dispatched_at": at,
    }
    headers = RecordHeaders(attempt=1, due_ms=due_ms).encode()
    return flag_key.encode(), json.dumps(value).encode(), headers


def _open_event() -> bytes:
    return json.dumps(
        {
            "state": "open",
            "worker_id": "intruder\r\n\x1b[31mFAKE",
            "reason": "forged by the chaos run",
            "at": datetime.now(UTC).isoformat(),
        }
    ).encode()
