"""What flagsched relies on from the real broker: headers, transactions, read_committed."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import CommitFailedError
from kafka.structs import OffsetAndMetadata

from flagsched.consumer.txn import TransactionalForwarder
from flagsched.devstack import Endpoints

pytestmark = pytest.mark.integration

DEADLINE_S = 30.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def bootstrap(services: Endpoints) -> list[str]:
    return services.kafka_bootstrap_servers.split(",")


@pytest.fixture
def admin(bootstrap: list[str]) -> Iterator[Any]:
    client = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="test-kafka-basics")
    yield client
    client.close()


@pytest.fixture
def new_topic(admin: Any) -> Iterator[Callable[[], str]]:
    """Create a uniquely named topic (one partition unless told) per call; delete them
    afterwards."""
    created: list[str] = []

    def make(partitions: int = 1) -> str:
        name = unique("basics")
        admin.create_topics(
            {name: {"num_partitions": partitions, "replication_factor": 1}},
            wait_for_metadata=True,
        )
        created.append(name)
        return name

    yield make
    if created:
        admin.delete_topics(created)


@pytest.fixture
def clients() -> Iterator[list[Any]]:
    """Producers and consumers opened by a test, closed whatever happens."""
    opened: list[Any] = []
    yield opened
    for client in reversed(opened):
        client.close()


def consumer(bootstrap: list[str], clients: list[Any], *topics: str, **config: Any) -> Any:
    config.setdefault("auto_offset_reset", "earliest")
    config.setdefault("enable_auto_commit", False)
    c = KafkaConsumer(*topics, bootstrap_servers=bootstrap, **config)
    clients.append(c)
    return c


def producer(bootstrap: list[str], clients: list[Any], **config: Any) -> Any:
    p = KafkaProducer(bootstrap_servers=bootstrap, **config)
    clients.append(p)
    return p


def consume(c: Any, until: Callable[[list[Any]], bool]) -> list[Any]:
    """Poll until ``until(records)`` holds or the deadline passes; return what arrived."""
    records: list[Any] = []
    deadline = time.monotonic() + DEADLINE_S
    while not until(records) and time.monotonic() < deadline:
        for batch in c.poll(timeout_ms=200).values():
            records.extend(batch)
    return records


def test_headers_round_trip(bootstrap, clients, new_topic):
    topic = new_topic()
    headers = [("schedule-id", b"42"), ("attempt", b"3"), ("empty", b"")]
    p = producer(bootstrap, clients)
    p.send(topic, key=b"flag-a", value=b"payload", headers=headers).get(timeout=DEADLINE_S)
    c = consumer(bootstrap, clients, topic, group_id=unique("headers"))

    [record] = consume(c, lambda rs: len(rs) >= 1)

    assert record.key == b"flag-a"
    assert record.value == b"payload"
    assert [(k, bytes(v)) for k, v in record.headers] == headers


def test_consume_transform_produce_commits_offsets_in_the_transaction(
    bootstrap, clients, new_topic, admin
):
    source, sink, group = new_topic(), new_topic(), unique("ctp")
    plain = producer(bootstrap, clients)
    for word in (b"a", b"b", b"c"):
        plain.send(source, value=word)
    plain.flush(timeout=DEADLINE_S)
    c = consumer(bootstrap, clients, source, group_id=group, isolation_level="read_committed")
    txn = producer(bootstrap, clients, transactional_id=unique("ctp-txn"))
    txn.init_transactions()

    records = consume(c, lambda rs: len(rs) >= 3)
    assert [r.value for r in records] == [b"a", b"b", b"c"]
    txn.begin_transaction()
    for r in records:
        txn.send(sink, value=r.value.upper(), headers=[("source-offset", str(r.offset).encode())])
    tp = TopicPartition(source, 0)
    txn.send_offsets_to_transaction(
        {tp: OffsetAndMetadata(records[-1].offset + 1, "", -1)}, c.group_metadata()
    )
    txn.commit_transaction()

    def committed() -> int | None:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
        return offsets[tp].offset if tp in offsets else None

    deadline = time.monotonic() + DEADLINE_S
    while committed() != 3 and time.monotonic() < deadline:
        c.poll(timeout_ms=100)  # keep the member alive while the markers land
    assert committed() == 3
    reader = consumer(bootstrap, clients, sink, isolation_level="read_committed")
    out = consume(reader, lambda rs: len(rs) >= 3)
    assert [r.value for r in out] == [b"A", b"B", b"C"]
    assert [dict(r.headers)["source-offset"] for r in out] == [b"0", b"1", b"2"]


def test_read_committed_never_sees_an_aborted_record(bootstrap, clients, new_topic):
    topic = new_topic()
    txn = producer(bootstrap, clients, transactional_id=unique("abort-txn"))
    txn.init_transactions()
    txn.begin_transaction()
    txn.send(topic, value=b"aborted")
    txn.flush(timeout=DEADLINE_S)  # really on the log before the abort
    txn.abort_transaction()
    txn.begin_transaction()
    txn.send(topic, value=b"committed")
    txn.commit_transaction()

    committed_reader = consumer(bootstrap, clients, topic, isolation_level="read_committed")
    seen = consume(committed_reader, lambda rs: any(r.value == b"committed" for r in rs))
    # The aborted record precedes the committed one, so it would have arrived first.
    assert [r.value for r in seen] == [b"committed"]

    # Control: the aborted record is on the log; only isolation hides it.
    dirty_reader = consumer(bootstrap, clients, topic, isolation_level="read_uncommitted")
    dirty = consume(dirty_reader, lambda rs: any(r.value == b"committed" for r in rs))
    assert [r.value for r in dirty] == [b"aborted", b"committed"]


# --- an aborted transaction's offsets (docs/reliability.md, item 3) ---------------------
def _joined_member(bootstrap: list[str], clients: list[Any], topic: str, group: str) -> Any:
    """A consumer of ``topic`` that has joined ``group`` and owns both partitions."""
    c = consumer(bootstrap, clients, topic, group_id=group)
    deadline = time.monotonic() + DEADLINE_S
    while len(c.assignment()) < 2 and time.monotonic() < deadline:
        c.poll(timeout_ms=200)
    assert len(c.assignment()) == 2, "the consumer never joined its group"
    return c


def _committed(admin: Any, group: str, member: Any, tp: Any, *, want: Any) -> int | None:
    """The group's committed offset of ``tp`` once it reads ``want`` (or at the deadline),
    polling ``member`` meanwhile so it stays in the group while the markers land."""

    def read() -> int | None:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
        return offsets[tp].offset if tp in offsets else None

    deadline = time.monotonic() + DEADLINE_S
    while read() != want and time.monotonic() < deadline:
        member.poll(timeout_ms=100)
    return read()


def _refused_then_committed(
    bootstrap: list[str], clients: list[Any], admin: Any, new_topic: Any, commit: Any
) -> tuple[int | None, int | None]:
    """A transaction whose offsets (partition 0 at 5) the broker refuses for a stale
    generation is aborted; the next one commits partition 1 at 3 only. Returns the
    group's committed offsets of partitions 0 and 1 afterwards."""
    topic, group = new_topic(partitions=2), unique("stale-offsets")
    member = _joined_member(bootstrap, clients, topic, group)
    meta = member.group_metadata()
    stale = meta._replace(generation_id=meta.generation_id + 7)  # as after a rebalance
    first, second = TopicPartition(topic, 0), TopicPartition(topic, 1)
    commit({first: OffsetAndMetadata(5, "", -1)}, stale, refused=True)
    commit({second: OffsetAndMetadata(3, "", -1)}, meta, refused=False)
    got_second = _committed(admin, group, member, second, want=3)
    return _committed(admin, group, member, first, want=None), got_second


def test_kafka_python_commits_an_aborted_transactions_offsets_with_the_next_one(
    bootstrap, clients, new_topic, admin
):
    """The client behaviour flagsched works around (kafka_compat.finish_transaction):
    if this starts failing, kafka-python fixed it and the workaround can go."""
    txn = producer(bootstrap, clients, transactional_id=unique("stale-txn"))
    txn.init_transactions()

    def commit(offsets: Any, meta: Any, *, refused: bool) -> None:
        txn.begin_transaction()
        if refused:
            with pytest.raises(CommitFailedError, match="IllegalGenerationError"):
                txn.send_offsets_to_transaction(offsets, meta)
            txn.abort_transaction()
        else:
            txn.send_offsets_to_transaction(offsets, meta)
            txn.commit_transaction()

    first, second = _refused_then_committed(bootstrap, clients, admin, new_topic, commit)
    assert second == 3
    assert first == 5  # committed although its transaction was aborted


def test_the_worker_never_commits_an_aborted_transactions_offsets(
    bootstrap, clients, new_topic, admin
):
    """The worker's forwarder after a commit the broker refused (a rebalance between the
    poll and the commit): the next transaction commits only its own offsets, so the
    aborted batch is consumed again, not skipped."""
    forwarder = TransactionalForwarder(
        lambda: KafkaProducer(bootstrap_servers=bootstrap, transactional_id=unique("fwd-txn")),
        timeout_s=DEADLINE_S,
    )
    clients.append(forwarder)

    def commit(offsets: Any, meta: Any, *, refused: bool) -> None:
        assert forwarder.commit([], offsets, meta) is not refused

    first, second = _refused_then_committed(bootstrap, clients, admin, new_topic, commit)
    assert second == 3
    assert first is None
