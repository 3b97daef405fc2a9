"""Chaos runs with a ledger check: a few hundred schedules (healthy, lock-failed,
permanently failing, superseded) against real Kafka and PostgreSQL while real faults
are injected; afterwards every schedule is accounted for (tests/support/chaos.py,
docs/reliability.md). The long variant is ``python -m bench.chaos``.

The seed of a run is printed with its ledger; ``CHAOS_SEED=<n>`` replays its choices
(which worker is killed when, the workload mix). ``CHAOS_LOG_DIR=<dir>`` keeps the
processes' logs.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from flagsched.consumer.kafka_compat import resume
from flagsched.runtime.clients import make_admin, make_consumer
from tests.support.chaos import (
    BREAKER_OVERRIDES,
    CHAOS_OVERRIDES,
    Ledger,
    PlannedFault,
    new_run_id,
    quiet_kafka_logs,
    run_chaos,
    seed_workload,
    spaced_times,
)
from tests.support.chaos_cleanup import CleanupChaos
from tests.support.pipeline import wait_until
from tests.support.services import need_local_stack

pytestmark = pytest.mark.integration

SCHEDULES = 300
SPREAD_S = 8.0


def log_dir(tmp_path: Path) -> Path:
    """The processes' logs: under ``CHAOS_LOG_DIR`` when set (to keep them, e.g. as CI
    artifacts), else in the test's temporary directory."""
    keep = os.environ.get("CHAOS_LOG_DIR")
    return Path(keep) / tmp_path.name if keep else tmp_path / "logs"


def chaos_seed() -> int:
    return int(os.environ.get("CHAOS_SEED") or random.randrange(2**32))


def chaos(
    settings: Any,
    tmp_path: Path,
    faults: list[PlannedFault],
    *,
    seed: int,
    devstack: Any = None,
    spread_s: float = SPREAD_S,
    transient_retry_base_s: float | None = None,
    canary: bool = False,
    cleanup: CleanupChaos | None = None,
) -> Ledger:
    run_id = new_run_id(random.Random(seed))

    def workload(conn: Any) -> Any:
        return seed_workload(
            conn,
            SCHEDULES,
            run_id=run_id,
            start_in_s=1.5,
            spread_s=spread_s,
            seed=seed,
            transient_retry_base_s=transient_retry_base_s,
        )

    with quiet_kafka_logs():
        ledger = run_chaos(
            settings,
            workload,
            faults,
            log_dir=log_dir(tmp_path),
            devstack=devstack,
            seed=seed,
            drain_timeout_s=60.0,
            canary=canary,
            cleanup=cleanup,
        )
    print(ledger.render())
    assert ledger.ok, ledger.render()
    assert ledger.schedules >= SCHEDULES
    assert ledger.lost == 0
    assert ledger.double_applied == 0
    assert ledger.dead > 0  # the permanent failures
    # Every process survived its fault (a supervisor would have restarted it: listed here).
    assert not ledger.stats.process_exits, ledger.render()
    return ledger


def test_sigkilled_workers_lose_and_double_nothing(make_settings, db, tmp_path):
    seed = chaos_seed()
    settings = make_settings(**CHAOS_OVERRIDES)
    kills = spaced_times(random.Random(seed), 3, lo=0.5, hi=SPREAD_S + 2.0, gap=2.5)
    ledger = chaos(settings, tmp_path, [PlannedFault(t, "worker_kill") for t in kills], seed=seed)
    assert ledger.faults == {"worker_kill": 3}


def test_cleanup_every_second_with_manual_retries_deletes_nothing_live(
    make_settings, db, dsn, tmp_path
):
    # Issue 16: retention runs every second through a chaos run with killed workers,
    # while an operator retries dead schedules by hand. The ledger holds (deleted rows
    # are accounted for from an archive) and every deleted row was terminal.
    seed = chaos_seed()
    spread_s = float(os.environ.get("CHAOS_CLEANUP_SPREAD_S", "40"))
    # The manual retry's wake-up comes from the stuck-row sweep, which runs every
    # dispatch_stuck_after_s. Not shorter: a sweep re-sending a pre-dispatched row's
    # wake-up while its tier record is in flight makes two workers race for the flag, and
    # the loser's lock_contention uses up an attempt (seen with 1 s).
    settings = make_settings(**CHAOS_OVERRIDES, dispatch_stuck_after_s=20.0)
    kills = spaced_times(random.Random(seed), 3, lo=2.0, hi=spread_s, gap=5.0)
    cleanup = CleanupChaos(dsn, retention_s=20.0, every_s=1.0, stuck_after_s=20.0, seed=seed)
    ledger = chaos(
        settings,
        tmp_path,
        [PlannedFault(t, "worker_kill") for t in kills],
        seed=seed,
        spread_s=spread_s,
        cleanup=cleanup,
    )
    assert ledger.faults == {"worker_kill": 3}
    s = ledger.stats
    assert s.cleanup_runs >= spread_s * 0.8, ledger.render()
    assert s.cleanup_deleted > 0, ledger.render()  # it did delete, all of it terminal
    assert s.manual_retries > 0, ledger.render()


def test_broker_restart_mid_run_loses_and_doubles_nothing(make_settings, db, tmp_path, devstack):
    need_local_stack(devstack)
    seed = chaos_seed()
    settings = make_settings(**CHAOS_OVERRIDES)
    ledger = chaos(
        settings,
        tmp_path,
        [PlannedFault(SPREAD_S * 0.35, "broker_restart")],
        seed=seed,
        devstack=devstack,
    )
    assert ledger.faults == {"broker_restart": 1}


def test_postgres_outage_past_the_breaker_burns_no_attempt(make_settings, db, tmp_path, devstack):
    need_local_stack(devstack)
    seed = chaos_seed()
    settings = make_settings(**CHAOS_OVERRIDES, **BREAKER_OVERRIDES)
    ledger = chaos(
        settings,
        tmp_path,
        [PlannedFault(SPREAD_S * 0.35, "postgres_outage")],
        seed=seed,
        devstack=devstack,
    )
    assert ledger.faults == {"postgres_outage": 1}
    # The outage was long enough to open the group's breaker, and it closed again.
    assert ledger.breaker_events.get("open", 0) >= 1, ledger.render()
    assert ledger.breaker_events.get("closed", 0) >= 1, ledger.render()
    # Healthy schedules took exactly one attempt each (checked per schedule in the ledger);
    # only lock-failed ones took more.


def test_rebalance_while_tiers_are_held_leaves_nothing_paused_or_early(make_settings, db, tmp_path):
    seed = chaos_seed()
    settings = make_settings(**CHAOS_OVERRIDES)
    ledger = chaos(
        settings,
        tmp_path,
        [PlannedFault(1.0, "rebalance"), PlannedFault(8.0, "rebalance")],
        seed=seed,
        spread_s=18.0,
        # lock-failed schedules retry after 2 s and more: their records sit held in the tiers
        transient_retry_base_s=2.0,
        # afterwards a schedule through every due/priority partition and every tier partition
        canary=True,
    )
    assert ledger.faults == {"rebalance": 2}
    # both happened while records were held in the tiers
    held = ("held_before", "held_at_join", "held_at_leave")
    assert all(any(e.detail[k] for k in held) for e in ledger.stats.faults), ledger.render()
    assert ledger.retried > 0


def test_a_resumed_partition_is_fetched_again(settings):
    """The cause of lost schedules the chaos runs found, isolated: a partition paused while
    its fetched records were next in line, resumed after other partitions' records were
    consumed, must be fetched again. kafka-python 3.0.12 parks those records and never
    restores them (it checks ``Fetcher._next_partition_records is None``, but a drained
    PartitionRecords stays in that slot), and a partition with parked data is left out of
    every fetch: the worker's held tier partitions stopped for good. A plain
    ``consumer.resume()`` still stalls; ``kafka_compat.resume`` must not."""
    topic = f"{settings.topic_prefix}.parked"
    admin = make_admin(settings)
    try:
        admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        admin.close()
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    publish(settings, [(p0 if i % 2 else p1, b"x") for i in range(200)])
    consumer = make_consumer(settings, group_id=None)
    got = {p0: 0, p1: 0}

    def take(max_records: int | None = None) -> dict[Any, list[Any]]:
        batch: dict[Any, list[Any]] = consumer.poll(timeout_ms=100, max_records=max_records)
        for tp, records in batch.items():
            got[tp] += len(records)
        return batch

    def read(tp: TopicPartition, total: int) -> Callable[[], bool]:
        return lambda: bool(take() or True) and got[tp] == total

    try:
        consumer.assign([p0, p1])
        # one record at a time until partition 1's fetched records are next in line
        wait_until(lambda: p1 in take(max_records=1), what="partition 1 in line", interval_s=0)
        consumer.pause(p1)  # a hold: its records are parked
        publish(settings, [(p0, b"y")] * 20)  # other work arrives and is consumed
        wait_until(read(p0, 120), what="partition 0 read")
        resume(consumer, [p1])  # the hold is over: flagsched's way of resuming
        wait_until(read(p1, 100), what="partition 1 read after resume()", timeout_s=10)
    finally:
        consumer.close()


def publish(settings: Any, records: list[tuple[TopicPartition, bytes]]) -> None:
    producer = KafkaProducer(**settings.kafka_client_config())
    try:
        for tp, value in records:
            producer.send(tp.topic, value=value, partition=tp.partition)
        producer.flush()
    finally:
        producer.close()
