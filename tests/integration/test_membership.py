"""Group membership: static members keep their partitions across a restart, a graceful
stop hands them over at once, and the priority lane's group does not wait on the loop.

Real worker processes (killed with SIGKILL, stopped with SIGTERM) next to a worker in a
thread whose group generation and assignment the test reads. These prove mechanisms;
the timing targets are measured by ``python -m bench --only membership``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from kafka import KafkaAdminClient, TopicPartition

from flagsched.consumer.assignor import BalancedCooperativeAssignor
from flagsched.consumer.kafka_compat import generation, poll
from flagsched.runtime.clients import make_consumer
from flagsched.runtime.settings import Settings
from tests.support.pipeline import (
    add_flag,
    add_schedule,
    hold_flag_lock,
    running_dispatcher,
    running_worker,
    settings_env,
    status_is,
    wait_until,
)

pytestmark = pytest.mark.integration

#: Longer than any deadline below: a partition that moves before it expired moved
#: because of the mechanism under test, not because the broker timed a member out.
SESSION_MS = 15000


@dataclass(frozen=True)
class Member:
    """One member of a group as the coordinator describes it."""

    member_id: str
    partitions: frozenset[TopicPartition]


def describe(settings: Settings, group: str) -> tuple[str, dict[str, Member]]:
    """The group's state and its members by group instance id (member id if dynamic)."""
    admin = KafkaAdminClient(**settings.kafka_client_config())
    try:
        described = admin.describe_groups([group])
    finally:
        admin.close()
    info = described[group] if isinstance(described, dict) else described[0]
    members: dict[str, Member] = {}
    for member in info["members"]:
        assignment = member.get("member_assignment") or {}
        parts = frozenset(
            TopicPartition(tp["topic"], p)
            for tp in assignment.get("assigned_partitions", [])
            for p in tp["partitions"]
        )
        key = str(member.get("group_instance_id") or member["member_id"])
        members[key] = Member(str(member["member_id"]), parts)
    return str(info["group_state"]), members


def consumed_partitions(settings: Settings) -> set[TopicPartition]:
    layout = settings.topic_layout()
    return {
        TopicPartition(spec.name, p)
        for spec in layout.specs()
        if spec.name in layout.consumed and spec.name != layout.priority
        for p in range(spec.partitions)
    }


def priority_partitions(settings: Settings) -> set[TopicPartition]:
    layout = settings.topic_layout()
    return {TopicPartition(layout.priority, p) for p in range(layout.priority_partitions)}


@contextmanager
def worker_process(settings: Settings, worker_id: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "flagsched.cli", "worker"],
        env=settings_env(settings) | {"FLAGSCHED_WORKER_ID": worker_id},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def both_own(settings: Settings, group: str, a: str, b: str) -> bool:
    state, members = describe(settings, group)
    return (
        state == "Stable"
        and bool(a in members and members[a].partitions)
        and bool(b in members and members[b].partitions)
    )


def owned_by(settings: Settings, instance: str) -> set[TopicPartition]:
    """What ``instance`` owns in the normal and the priority group."""
    out: set[TopicPartition] = set()
    for group in (settings.group_id, f"{settings.group_id}.priority"):
        member = describe(settings, group)[1].get(instance)
        out |= member.partitions if member else set()
    return out


@pytest.mark.parametrize("leader", ["steady", "phoenix"])
def test_a_worker_restarted_with_its_id_takes_its_partitions_back_without_a_rebalance(
    make_settings: Any, leader: str
) -> None:
    """Whichever member leads: the restarted one is a follower, or it is the leader of both
    groups (whoever joins an empty group first leads it, and keeps leading while it rejoins
    every rebalance). kafka-python sends JoinGroup v7; below v9 (KIP-814) the broker
    answers a restarted static leader with the generation and the dead member's id as the
    leader, so the new process syncs as a follower and gets its stored assignment back:
    no rebalance either way (docs/architecture.md, "Group membership")."""
    settings = make_settings(session_timeout_ms=SESSION_MS)
    group = settings.group_id
    groups = (group, f"{group}.priority")
    everything = consumed_partitions(settings) | priority_partitions(settings)
    with ExitStack() as stack:
        if leader == "phoenix":
            first = stack.enter_context(worker_process(settings, "phoenix"))
            wait_until(
                lambda: owned_by(settings, "phoenix") == everything,
                what="phoenix, alone, owns everything",
                timeout_s=60,
            )
            steady = stack.enter_context(running_worker(settings, worker_id="steady"))
        else:
            steady = stack.enter_context(running_worker(settings, worker_id="steady"))
            wait_until(
                lambda: steady.assigned == everything, what="steady owns everything", timeout_s=60
            )
            first = stack.enter_context(worker_process(settings, "phoenix"))
        wait_until(
            lambda: all(both_own(settings, g, "steady", "phoenix") for g in groups),
            what="both members own partitions in both groups",
            timeout_s=60,
        )
        wait_until(
            lambda: steady.assigned == owned_by(settings, "steady"),
            what="the thread worker applied its assignment",
            timeout_s=30,
        )
        # The case is the one meant: steady computed both groups' assignment iff it leads.
        assert steady.leads() == {g: leader == "steady" for g in groups}
        before_gen, before_owned = steady.generations(), set(steady.assigned)
        dead = {g: describe(settings, g)[1]["phoenix"] for g in groups}
        first.send_signal(signal.SIGKILL)  # a crash: no LeaveGroup
        first.wait(timeout=10)
        with worker_process(settings, "phoenix"):
            # The restarted process's JoinGroup replaces the dead member's id in each group.
            wait_until(
                lambda: all(
                    describe(settings, g)[1]["phoenix"].member_id != dead[g].member_id
                    for g in groups
                ),
                what="the restarted worker is a member of both groups again",
                timeout_s=30,
            )
            for g in groups:
                state, members = describe(settings, g)
                assert state == "Stable", g
                assert members["phoenix"].partitions == dead[g].partitions, g  # the same, back
            assert steady.generations() == before_gen  # no rebalance in either group
            assert steady.assigned == before_owned


@pytest.mark.parametrize("compat", [True, False], ids=["kafka_compat.poll", "bare poll"])
def test_a_join_that_finishes_between_two_polls_is_completed_not_sent_again(
    make_settings: Any, compat: bool
) -> None:
    """kafka-python 3.0.12 leaves a join in flight when a poll's timeout ends first; if it
    finishes before the next poll (the lane was handling a batch), the next poll sends a
    new JoinGroup, and a leader's makes the broker rebalance the group. kafka_compat.poll
    completes the finished join instead. The bare client is run too, to show the window
    is the one that rebalances (a new generation) and that this test can fail."""
    settings = make_settings(session_timeout_ms=SESSION_MS)
    group = f"{settings.group_id}.solo"
    consumer = make_consumer(
        settings,
        group_id=group,
        group_instance_id="solo",  # static, alone, so its group's leader
        partition_assignment_strategy=(BalancedCooperativeAssignor,),
    )
    due = settings.topic_layout().due
    consumer.subscribe([due])
    coordinator = consumer._coordinator  # the window is in the client's join loop
    try:
        # A leader that assigns before it knows the topic's partitions assigns nothing
        # and rejoins once it does (kafka-python's metadata check): not this window.
        wait_until(lambda: bool(consumer.partitions_for_topic(due)), what="metadata", timeout_s=30)
        # A poll that gives up at once starts the join and leaves it in flight...
        wait_until(
            lambda: (poll(consumer, 0, None), coordinator._join_task is not None)[1],
            what="a join in flight",
            timeout_s=30,
            interval_s=0.01,
        )
        # ...and it finishes while nobody polls.
        wait_until(lambda: coordinator._join_task.is_done, what="the join done", timeout_s=30)
        joined = generation(consumer)
        assert joined is not None and describe(settings, group)[0] == "Stable"

        def next_poll() -> bool:
            if compat:
                poll(consumer, 200, None)
            else:
                consumer.poll(timeout_ms=200)
            return bool(consumer.assignment())

        wait_until(
            next_poll,
            what="the member owns its partitions",
            timeout_s=30,
        )
        if compat:
            assert generation(consumer) == joined  # completed: no second join
            assert describe(settings, group)[0] == "Stable"
        else:
            assert (generation(consumer) or 0) > joined  # the leader joined again: a rebalance
    finally:
        consumer.close(autocommit=False)


def test_a_sigtermed_worker_hands_its_partitions_over_at_once(make_settings: Any) -> None:
    settings = make_settings(session_timeout_ms=SESSION_MS)
    group = settings.group_id
    everything = consumed_partitions(settings)
    with (
        running_worker(settings, worker_id="survivor") as survivor,
        worker_process(settings, "leaver") as leaver,
    ):
        wait_until(
            lambda: both_own(settings, group, "survivor", "leaver"),
            what="both members own partitions",
            timeout_s=60,
        )
        leaver.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        normal = {tp for tp in survivor.assigned if tp.topic != settings.topic_layout().priority}
        assert normal != everything
        wait_until(
            lambda: {tp for tp in survivor.assigned if tp in everything} == everything,
            what="the survivor owns every partition",
            timeout_s=SESSION_MS / 1000 / 2,
            interval_s=0.05,
        )
        took_s = time.monotonic() - stopped
        assert leaver.wait(timeout=10) == 0
    # Well inside the session timeout: the leave was explicit, not an expiry.
    assert took_s < SESSION_MS / 1000 / 2, took_s


def test_the_priority_group_settles_while_the_normal_consumer_is_busy(
    make_settings: Any, db: Any, dsn: str
) -> None:
    # A normal record whose apply waits 8 s on a held row lock keeps the normal loop busy.
    settings = make_settings(apply_lock_timeout_ms=8000, session_timeout_ms=SESSION_MS)
    group = f"{settings.group_id}.priority"
    add_flag(db, "stuck")
    sid = add_schedule(db, "stuck", {"enabled": True})
    _, release = hold_flag_lock(dsn, "stuck")
    try:
        with running_worker(settings, worker_id="busy"), running_dispatcher(settings):
            wait_until(
                lambda: (
                    db.execute(
                        "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND datname = current_database()"
                    ).fetchone()["n"]
                    > 0
                ),
                what="the normal loop waits on the lock",
                timeout_s=30,
            )
            busy_since = time.monotonic()
            with running_worker(settings, worker_id="joiner") as joiner:
                wait_until(
                    lambda: both_own(settings, group, "busy", "joiner"),
                    what="the priority group rebalanced to both members",
                    timeout_s=6,
                    interval_s=0.1,
                )
                settled_s = time.monotonic() - busy_since
                assert any(tp.topic == settings.topic_layout().priority for tp in joiner.assigned)
                still_waiting = not status_is(db, sid, "applied")
    finally:
        release()
    assert still_waiting, "the normal loop was not busy the whole time"
    assert settled_s < 8.0
