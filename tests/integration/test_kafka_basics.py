"""What flagsched relies on from the real broker: headers, transactions, read_committed."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

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
    """Create a uniquely named one-partition topic per call; delete them afterwards."""
    created: list[str] = []

    def make() -> str:
        name = unique("basics")
        admin.create_topics(
            {name: {"num_partitions": 1, "replication_factor": 1}}, wait_for_metadata=True
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
