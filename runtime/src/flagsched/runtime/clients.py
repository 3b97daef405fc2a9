"""Factories for kafka-python clients with flagsched's settings.

Nothing is created at import time; the CLI (composition root) calls these.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import KafkaError

from flagsched.runtime.errors import ServiceUnavailable
from flagsched.runtime.settings import Settings

log = logging.getLogger(__name__)


def _unavailable(settings: Settings, exc: Exception) -> ServiceUnavailable:
    return ServiceUnavailable(
        "cannot reach Kafka at FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS="
        f"{settings.kafka_bootstrap_servers}: {exc}"
    )


def _reachable(settings: Settings) -> None:
    """Fail fast (ServiceUnavailable) when no bootstrap server accepts a TCP connection.

    kafka-python's constructors block for ~30 s on an unreachable cluster; a plain
    connect lets start-up waits (retry/waiting.py) log and back off instead.
    """
    errors = []
    for server in (settings.kafka_bootstrap_servers or "").split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2.0):
                return
        except (OSError, ValueError) as exc:
            errors.append(f"{server}: {exc}")
    raise ServiceUnavailable(
        "cannot reach Kafka at FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS="
        f"{settings.kafka_bootstrap_servers}: {'; '.join(errors)}"
    )


def _base(settings: Settings) -> dict[str, Any]:
    cfg = settings.kafka_client_config()
    _reachable(settings)
    cfg["request_timeout_ms"] = max(5000, int(settings.connect_timeout_s * 1000))
    return cfg


def make_producer(
    settings: Settings, *, transactional_id: str | None = None, **extra: Any
) -> KafkaProducer:
    """An idempotent (optionally transactional) producer, acks=all."""
    cfg = _base(settings) | {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_block_ms": int(settings.connect_timeout_s * 1000),
    }
    if transactional_id:
        cfg["transactional_id"] = transactional_id
    cfg.update(extra)
    try:
        return KafkaProducer(**cfg)
    except KafkaError as exc:
        raise _unavailable(settings, exc) from exc


def make_consumer(
    settings: Settings,
    *,
    group_id: str | None,
    group_instance_id: str | None = None,
    **extra: Any,
) -> KafkaConsumer:
    """A read_committed consumer with manual offset management.

    ``group_instance_id`` makes it a static group member (KIP-345): restarted with the
    same id, it takes its partitions back without a rebalance.
    """
    cfg = _base(settings) | {
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_poll_records": settings.max_poll_records,
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        "max_poll_interval_ms": settings.max_poll_interval_ms,
        "fetch_max_wait_ms": 100,
        # Consumers in a group pass their own assignor (consumer/assignor.py).
        "partition_assignment_strategy": (RangePartitionAssignor,),
    }
    if group_instance_id is not None:
        cfg["group_instance_id"] = group_instance_id
    cfg.update(extra)
    try:
        return KafkaConsumer(**cfg)
    except KafkaError as exc:
        raise _unavailable(settings, exc) from exc


def make_admin(settings: Settings) -> KafkaAdminClient:
    """An admin client, or ServiceUnavailable naming the setting."""
    try:
        return KafkaAdminClient(**_base(settings))
    except KafkaError as exc:
        raise _unavailable(settings, exc) from exc
