"""The worker's transactional producer: forwards and source offsets in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from flagsched.consumer.kafka_compat import abort_transaction, finish_transaction
from flagsched.consumer.outcome import OutRecord

log = logging.getLogger(__name__)


class TransactionalForwarder:
    """Commits a poll's outgoing records together with the consumed offsets.

    ``commit`` returns False when the transaction did not commit (aborted, or the
    broker is unreachable); the caller then rewinds, and the database side replays
    idempotently. A producer that cannot abort is replaced, lazily, so a broker
    outage never crashes the worker.
    """

    def __init__(self, factory: Callable[[], Any], *, timeout_s: float = 10.0) -> None:
        self._factory = factory
        self._timeout_s = timeout_s
        self._producer: Any = self._new()

    def _new(self) -> Any:
        producer = self._factory()
        try:
            producer.init_transactions()
        except BaseException:
            producer.close(timeout=1)
            raise
        return producer

    def commit(
        self, publish: list[OutRecord], offsets: dict[Any, OffsetAndMetadata], group_meta: Any
    ) -> bool:
        """One Kafka transaction: every record in ``publish`` plus ``offsets``."""
        try:
            if self._producer is None:
                self._producer = self._new()
            self._producer.begin_transaction()
            futures = [
                self._producer.send(out.topic, key=out.key, value=out.value, headers=out.headers)
                for out in publish
            ]
            finish_transaction(self._producer, futures, offsets, group_meta, self._timeout_s)
        except KafkaError as exc:
            log.warning("kafka transaction failed, aborting: %s", exc)
            self._abort()
            return False
        return True

    def _abort(self) -> None:
        if self._producer is None:
            return
        try:
            abort_transaction(self._producer, self._timeout_s)
        except Exception:  # fenced, fatal or unreachable: drop it, a fresh one comes lazily
            log.warning("abort failed; the transactional producer will be recreated", exc_info=True)
            try:
                self._producer.close(timeout=0)
            except Exception:
                log.debug("closing the failed producer failed", exc_info=True)
            self._producer = None

    def close(self) -> None:
        """Flush and close."""
        if self._producer is not None:
            self._producer.close(timeout=5)
