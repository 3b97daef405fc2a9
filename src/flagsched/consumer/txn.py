"""The worker's transactional producer: forwards and source offsets in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from flagsched.consumer.outcome import OutRecord

log = logging.getLogger(__name__)


class TransactionalForwarder:
    """Commits a poll's outgoing records together with the consumed offsets.

    ``commit`` returns False when the transaction was aborted; the caller then
    rewinds, and the database side replays idempotently.
    """

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._producer = self._new()

    def _new(self) -> Any:
        producer = self._factory()
        producer.init_transactions()
        return producer

    def commit(
        self, publish: list[OutRecord], offsets: dict[Any, OffsetAndMetadata], group_meta: Any
    ) -> bool:
        """One Kafka transaction: every record in ``publish`` plus ``offsets``."""
        try:
            self._producer.begin_transaction()
            for out in publish:
                self._producer.send(out.topic, key=out.key, value=out.value, headers=out.headers)
            self._producer.send_offsets_to_transaction(offsets, group_meta)
            self._producer.commit_transaction()
        except KafkaError as exc:
            log.warning("kafka transaction failed, aborting: %s", exc)
            self._abort()
            return False
        return True

    def _abort(self) -> None:
        try:
            self._producer.abort_transaction()
        except Exception:  # a fenced or broken producer: start a fresh one
            log.warning("abort failed; recreating the transactional producer", exc_info=True)
            try:
                self._producer.close(timeout=1)
            finally:
                self._producer = self._new()

    def close(self) -> None:
        """Flush and close."""
        self._producer.close(timeout=5)
