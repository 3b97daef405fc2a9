"""The transactional outbox: Kafka records an action publishes once it commits.

An action writes its records into ``admin_outbox`` in its own transaction; a drainer
sends unsent rows in id order and marks them sent. If the process dies between the
commit and the send, the next drain (this process restarted, another API replica, or
the next CLI call) sends them: nothing is lost. Only a death after the broker's
acknowledgement and before the ``sent_at`` update re-sends a record, with the same
payload and ``event_id``; subscribers de-duplicate on (schedule_id, type, attempt).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg
from kafka.errors import KafkaError
from psycopg.types.json import Jsonb

from flagsched.admin.service.background import Background
from flagsched.runtime.db.connect import DictConnection
from flagsched.runtime.errors import ServiceUnavailable

log = logging.getLogger(__name__)

#: Rows sent per drain transaction.
BATCH = 500
#: How often the drainer prunes old rows.
PRUNE_EVERY_S = 60.0

_UNSENT = """
SELECT id, topic, key, value, headers FROM admin_outbox
 WHERE sent_at IS NULL ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED
"""


def enqueue(
    conn: DictConnection,
    topic: str,
    key: bytes | None,
    value: bytes,
    headers: list[tuple[str, bytes]],
) -> None:
    """Add one record to the outbox inside the caller's open transaction."""
    conn.execute(
        "INSERT INTO admin_outbox (topic, key, value, headers) VALUES (%s, %s, %s, %s)",
        (topic, key, value, Jsonb([[k, v.decode()] for k, v in headers])),
    )


def drain_once(conn: DictConnection, producer: Any, *, timeout_s: float = 10.0) -> int:
    """Send one batch of unsent records and mark them sent; return how many."""
    with conn.transaction():
        rows = conn.execute(_UNSENT, (BATCH,)).fetchall()
        if not rows:
            return 0
        futures = [
            producer.send(
                r["topic"],
                key=None if r["key"] is None else bytes(r["key"]),
                value=bytes(r["value"]),
                headers=[(k, v.encode()) for k, v in r["headers"]],
            )
            for r in rows
        ]
        producer.flush(timeout=timeout_s)
        for fut in futures:
            fut.get(timeout=timeout_s)  # not acknowledged: roll back, send again later
        conn.execute(
            "UPDATE admin_outbox SET sent_at = now() WHERE id = ANY(%s)", ([r["id"] for r in rows],)
        )
    for r in rows:
        log.info("outbox=%s key=%s sent to topic=%s", r["id"], _key(r["key"]), r["topic"])
    return len(rows)


def _key(key: bytes | None) -> str | None:
    return None if key is None else bytes(key).decode("utf-8", "replace")


#: Sent outbox rows and idempotency records are kept this long, then pruned.
KEEP = "1 day"


def prune(conn: DictConnection) -> int:
    """Delete sent outbox rows and idempotency records older than :data:`KEEP`."""
    with conn.transaction():
        sent = conn.execute(
            f"DELETE FROM admin_outbox WHERE sent_at < now() - interval '{KEEP}'"
        ).rowcount
        keys = conn.execute(
            f"DELETE FROM admin_idempotency WHERE created_at < now() - interval '{KEEP}'"
        ).rowcount
    return sent + keys


def drain_all(conn: DictConnection, producer: Any, *, timeout_s: float = 10.0) -> int:
    """Drain until nothing is left; return how many were sent."""
    total = 0
    while sent := drain_once(conn, producer, timeout_s=timeout_s):
        total += sent
    return total


class OutboxDrainer(Background):
    """A thread that drains the outbox when nudged after a commit, and every ``poll_s``;
    it closes its producer when stopped."""

    def __init__(
        self,
        connect: Callable[[], DictConnection],
        make_producer: Callable[[], Any],
        *,
        poll_s: float = 1.0,
    ) -> None:
        super().__init__("admin-outbox", poll_s=poll_s)
        self._connect = connect
        self._make_producer = make_producer
        self.producer: Any = None

    def _loop(self) -> None:
        conn: DictConnection | None = None
        pruned_at = 0.0
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = self._connect()
                if time.monotonic() - pruned_at > PRUNE_EVERY_S:
                    prune(conn)
                    pruned_at = time.monotonic()
                if self.producer is None:
                    self.producer = self._make_producer()
                drain_all(conn, self.producer)
            except (psycopg.Error, KafkaError, ServiceUnavailable) as exc:
                log.warning("outbox drain failed, retrying in %.1fs: %s", self._poll_s, exc)
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
                conn = None
            self._sleep()
        if conn is not None:
            conn.close()
        if self.producer is not None:
            self.producer.close(timeout=5)
