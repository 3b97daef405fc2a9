"""The bad day is boring: a database outage opens the group's breaker without burning
attempts; SIGTERM mid-batch leaves offsets matching the database; a worker started
before Kafka waits for it."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from flagsched.devstack import DevStack
from flagsched.devstack.kafka import LocalKafka, ensure_jars
from flagsched.runtime.settings import Settings
from flagsched.schemas.events import ScheduleDue
from flagsched.schemas.headers import RecordHeaders
from flagsched.schemas.topics import TopicLayout
from tests.support.pipeline import (
    add_flag,
    add_schedule,
    connect,
    owns,
    running_worker,
    schedule,
    settings_env,
    setup_topics,
    wait_until,
)
from tests.support.services import need_local_stack

pytestmark = pytest.mark.integration


def due_records(settings: Settings, db: Any, ids: list[int]) -> list[tuple[str, bytes, bytes, Any]]:
    """schedule-due records for rows, as the dispatcher would publish them."""
    layout = settings.topic_layout()
    out = []
    for sid in ids:
        row = schedule(db, sid)
        event = ScheduleDue(
            schedule_id=sid,
            flag_key=row["flag_key"],
            scheduled_at=row["scheduled_at"],
            dispatched_at=row["scheduled_at"],
        )
        headers = RecordHeaders(attempt=1, due_ms=int(row["scheduled_at"].timestamp() * 1000))
        out.append(
            (
                layout.due,
                row["flag_key"].encode(),
                event.model_dump_json().encode(),
                headers.encode(),
            )
        )
    return out


def publish(settings: Settings, records: list[tuple[str, bytes, bytes, Any]]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    for topic, key, value, headers in records:
        producer.send(topic, key=key, value=value, headers=headers)
    producer.flush()
    producer.close()


def seed(db: Any, n: int, flags: int = 10) -> list[int]:
    for i in range(flags):
        add_flag(db, f"f{i}")
    ids = [add_schedule(db, f"f{i % flags}", {"rollout_percentage": i % 101}) for i in range(n)]
    db.execute("UPDATE flag_schedules SET status = 'dispatched'")
    return ids


def applied_count(dsn: str) -> int:
    with connect(dsn) as conn:
        row = conn.execute("SELECT count(*) AS n FROM flag_change_log").fetchone()
        assert row is not None
        return int(row["n"])


def end_offset(settings: Settings, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(parts).values())
    finally:
        consumer.close()


class PostgresOutage:
    """A real outage of the session's PostgreSQL: ``begin`` stops the server, ``end``
    starts it again; the fixture ends an outage the test left running, whatever happened."""

    def __init__(self, devstack: DevStack) -> None:
        self._postgres = devstack.postgres
        self.active = False

    def begin(self) -> None:
        self.active = True
        self._postgres.stop()

    def end(self) -> None:
        self._postgres.start()
        self.active = False


@pytest.fixture
def postgres_outage(devstack: DevStack | None) -> Iterator[PostgresOutage]:
    need_local_stack(devstack)
    assert devstack is not None
    outage = PostgresOutage(devstack)
    try:
        yield outage
    finally:
        if outage.active:  # the test failed mid-outage: later tests need the server
            outage.end()


def test_database_outage_opens_the_group_breaker_and_burns_no_attempt(
    make_settings, db, dsn, postgres_outage
):
    settings = make_settings(
        breaker_failure_threshold=2,
        infra_pause_s=0.2,
        breaker_probe_base_s=0.3,
        breaker_probe_cap_s=1.0,
        breaker_drain_rate_per_s=20.0,
        breaker_drain_s=30.0,
    )
    ids = seed(db, 40)
    records = due_records(settings, db, ids)
    transitions: list[tuple[str, str, float]] = []

    def hook(name: str) -> Any:
        return lambda state: transitions.append((name, state.value, time.monotonic()))

    with (
        running_worker(settings, worker_id="w1", on_breaker=hook("w1")) as w1,
        running_worker(settings, worker_id="w2", on_breaker=hook("w2")) as w2,
    ):
        due = settings.topic_layout().due
        wait_until(
            lambda: owns(w1, due) and owns(w2, due), what="both own due partitions", timeout_s=90
        )
        postgres_outage.begin()  # a real outage: the server is gone
        publish(settings, records)
        wait_until(
            lambda: w1.breaker.is_open and w2.breaker.is_open,
            what="both breakers open",
            timeout_s=20,
        )
        opened = [t for t in transitions if t[1] == "open"]
        first, last = opened[0][2], max(t[2] for t in opened[:2])
        assert last - first < 1.0, transitions  # the group pauses together
        # The outage lasts a while longer than the breaker threshold; that is the fault.
        threading.Event().wait(2.0)
        with pytest.raises(psycopg.OperationalError):  # the server is really gone
            applied_count(dsn)
        postgres_outage.end()
        wait_until(
            lambda: not w1.breaker.is_open and not w2.breaker.is_open,
            what="breakers closed",
            timeout_s=20,
        )
        closed_at = time.monotonic()
        wait_until(lambda: applied_count(dsn) == len(ids), what="all applied", timeout_s=60)
        drain_s = time.monotonic() - closed_at
    with connect(dsn) as conn:
        per_schedule = conn.execute(
            "SELECT schedule_id, count(*) AS n, max(attempt) AS a FROM schedule_retry_attempts"
            " GROUP BY 1"
        ).fetchall()
    assert len(per_schedule) == len(ids)
    assert {(r["n"], r["a"]) for r in per_schedule} == {(1, 1)}  # no attempt burned
    layout = settings.topic_layout()
    assert end_offset(settings, layout.dead_letter) == 0  # nothing dead-lettered by the outage
    control = read_control(settings, layout)
    assert [c["state"] for c in control][:1] == ["open"] and "closed" in [
        c["state"] for c in control
    ]
    # bounded drain: 2 workers x 20 records/s, from an empty bucket
    assert drain_s >= len(ids) / (2 * 20.0) * 0.8, drain_s
    print(f"breaker: open->closed; drained {len(ids)} in {drain_s:.2f}s")


def read_control(settings: Settings, layout: TopicLayout) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=500,
    )
    consumer.assign([TopicPartition(layout.control, 0)])
    events = [json.loads(r.value) for r in consumer]
    consumer.close()
    return events


def committed_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.group_id,
        enable_auto_commit=False,
    )
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return {tp.partition: consumer.committed(tp) or 0 for tp in parts}
    finally:
        consumer.close()


def test_sigterm_mid_batch_leaves_offsets_matching_the_database(make_settings, db, dsn, tmp_path):
    settings = make_settings(max_poll_records=20)
    ids = seed(db, 300)
    publish(settings, due_records(settings, db, ids))
    log_path = tmp_path / "worker.log"
    proc = start_worker(settings, log_path)
    try:
        wait_until(lambda: applied_count(dsn) >= 30, what="worker under way", timeout_s=60)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        stopped_s = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = log_path.read_text()
    assert code == 0, stderr[-2000:]
    assert "leaving the group" in stderr
    assert stopped_s < 10
    layout = settings.topic_layout()
    committed = committed_offsets(settings, layout.due)
    # Every record below the committed offset has its attempt in the database, and none
    # above it does: offsets and database agree (the batch finished, then committed).
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
    )
    consumer.assign([TopicPartition(layout.due, p) for p in committed])
    with connect(dsn) as conn:
        done = {
            r["schedule_id"]
            for r in conn.execute("SELECT schedule_id FROM schedule_retry_attempts")
        }
    below = above = 0
    for rec in consumer:
        sid = ScheduleDue.model_validate_json(rec.value).schedule_id
        if rec.offset < committed[rec.partition]:
            assert sid in done, (rec.partition, rec.offset)
            below += 1
        else:
            assert sid not in done, (rec.partition, rec.offset)
            above += 1
    consumer.close()
    assert below >= 30 and above > 0
    # a new worker finishes the rest, each exactly once (UNIQUE(schedule_id) in the log)
    with running_worker(settings):
        wait_until(lambda: applied_count(dsn) == len(ids), what="the rest", timeout_s=60)


def test_worker_started_before_kafka_waits_then_runs(make_settings, tmp_path: Path, dsn):
    port = free_port()
    settings = make_settings().model_copy(
        update={"kafka_bootstrap_servers": f"127.0.0.1:{port}", "connect_timeout_s": 2.0}
    )
    log_path = tmp_path / "worker.log"
    proc = start_worker(settings, log_path)

    def logged(text: str) -> bool:
        return text in log_path.read_text()

    kafka = LocalKafka(
        tmp_path / "late-kafka", ensure_jars(Path.home() / ".cache/flagsched"), port=port
    )
    try:
        wait_until(
            lambda: logged("waiting for Kafka"),
            what="a clear waiting log line",
            timeout_s=30,
        )
        assert proc.poll() is None  # waiting, not crash-looping
        kafka.start()
        late = settings.model_copy(update={"connect_timeout_s": 10.0})
        setup_topics(late)
        wait_until(lambda: logged("consuming"), what="worker started", timeout_s=60)
        assert logged("FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
            kafka.stop()


def start_worker(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """`flagsched worker` as a real process, its log in a file."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "flagsched.cli", "worker"],
            env=settings_env(settings),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
