"""`flagsched notifier`: the intake loop (Kafka -> notification_deliveries -> commit) and
the delivery loop (digests, then the outbox), in two threads of one process.

The intake commits a batch's offsets only after its deliveries are committed to
PostgreSQL; a notifier killed at any point re-reads at most that batch, and the
deliveries' primary key makes re-recording it a no-op. The outbox works from the
table alone, so it picks up whatever a killed notifier left queued.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import Any

import psycopg
from kafka.errors import KafkaError

from flagsched.notifier.backlog import check_backlog
from flagsched.notifier.config import NotifyConfig
from flagsched.notifier.decode import Decoded, RecordDecoder
from flagsched.notifier.flush import flush_due
from flagsched.notifier.guard import Guard, Resolver, system_resolver
from flagsched.notifier.metrics import NotifierMetrics
from flagsched.notifier.outbox import Outbox
from flagsched.notifier.rules import route
from flagsched.notifier.settings import NotifySettings
from flagsched.notifier.store import Pending, disabled_sinks, priorities, record, resolve_applied
from flagsched.notifier.transport import Transport
from flagsched.runtime.clients import make_consumer
from flagsched.runtime.db.connect import DictConnection, connect
from flagsched.runtime.errors import ServiceUnavailable
from flagsched.runtime.settings import Settings
from flagsched.runtime.waiting import wait_for

log = logging.getLogger(__name__)


def db_now(conn: DictConnection) -> datetime:
    """The database's clock: deliveries are stamped by it, so groups are timed by it."""
    row = conn.execute("SELECT clock_timestamp() AS now").fetchone()
    assert row is not None
    now: datetime = row["now"]
    return now


class Notifier:
    """One notifier process: a consumer in the notifier group plus an outbox sender."""

    def __init__(
        self,
        settings: Settings,
        notify: NotifySettings,
        config: NotifyConfig,
        *,
        metrics: NotifierMetrics | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.settings = settings
        self.notify = notify
        self.config = config
        self.metrics = metrics or NotifierMetrics(list(config.sinks))
        self.decoder = RecordDecoder(
            settings.topic_layout(), breaker_max_age_s=notify.breaker_max_age_s
        )
        guard = Guard(
            allow_insecure=notify.allow_insecure, allow=config.network.allow, resolver=resolver
        )
        self.transport = Transport(
            guard,
            timeout_s=notify.http_timeout_s,
            max_response_bytes=notify.max_response_bytes,
            ca_file=notify.ca_file,
        )
        self.outbox = Outbox(config, self.transport, notify.retry_policy(), self.metrics)
        self.ready = threading.Event()
        self._next_backlog_check = 0.0
        #: The retry backlog at the last check (None: not checked by this notifier).
        self.last_backlog: int | None = None
        self._dsn = settings.require_database_url()

    def _connect(self, stop: threading.Event) -> DictConnection:
        return wait_for(
            lambda: connect(self._dsn, timeout_s=self.settings.connect_timeout_s, autocommit=True),
            what="PostgreSQL (FLAGSCHED_DATABASE_URL)",
            deadline_s=self.settings.startup_timeout_s,
            stop=stop,
        )

    def run(self, stop: threading.Event) -> None:
        """Until ``stop`` is set: the delivery loop in a thread, the intake here."""
        sender = threading.Thread(
            target=self._deliver_loop, args=(stop,), name="notifier-outbox", daemon=True
        )
        sender.start()
        try:
            self._intake_loop(stop)
        finally:
            stop.set()
            sender.join(timeout=self.notify.http_timeout_s + 5)
            self.transport.close()

    # --- intake --------------------------------------------------------------------
    def _intake_loop(self, stop: threading.Event) -> None:
        consumer: Any = wait_for(
            # A short metadata age: a group joined before the topics' metadata arrived is
            # rebalanced within seconds, not after kafka-python's default five minutes.
            lambda: make_consumer(
                self.settings, group_id=self.notify.group_id, metadata_max_age_ms=10_000
            ),
            what="Kafka (FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS)",
            deadline_s=self.settings.startup_timeout_s,
            stop=stop,
        )
        wait_for(
            lambda: self._topics_ready(consumer),
            what="the notifier's topics",
            deadline_s=self.settings.startup_timeout_s,
            stop=stop,
        )
        consumer.subscribe(self.decoder.topics)
        conn = self._connect(stop)
        log.info("notifier group=%s reading %s", self.notify.group_id, self.decoder.topics)
        try:
            while not stop.is_set():
                polled = consumer.poll(timeout_ms=200)
                if consumer.assignment():
                    self.ready.set()
                records = [rec for batch in polled.values() for rec in batch]
                if not records:
                    continue
                try:
                    self.take(conn, records)
                except psycopg.Error as exc:
                    log.warning("deliveries not recorded (%s): re-reading the batch", exc)
                    _rewind(consumer)
                    conn.close()
                    stop.wait(self.settings.infra_pause_s)
                    conn = self._connect(stop)
                    continue
                try:
                    consumer.commit()  # only now: every delivery of the batch is in the table
                except KafkaError as exc:
                    # A rebalance took the partitions: their new owner re-reads the batch,
                    # and recording it again is a no-op (the deliveries' primary key).
                    log.warning("offsets not committed (%s): the batch will be re-read", exc)
        finally:
            consumer.close(autocommit=False)
            conn.close()

    def _topics_ready(self, consumer: Any) -> None:
        missing = [t for t in self.decoder.topics if not consumer.partitions_for_topic(t)]
        if missing:
            raise ServiceUnavailable(
                f"topics {', '.join(missing)} have no partitions yet (flagsched topics create)"
            )

    def take(self, conn: DictConnection, records: list[Any]) -> int:
        """Record the deliveries of one batch of records in one transaction; returns
        how many rows were new."""
        decoded = Decoded()
        self.decoder.decode(records, decoded)
        with conn.transaction():
            ids = [
                n.schedule_id
                for n, _ in decoded.notices
                if n.schedule_id is not None and n.priority is None
            ]
            prio = priorities(conn, ids)
            disabled = disabled_sinks(conn, self.config)
            pending = []
            for notice, rec in decoded.notices:
                if notice.priority is None and notice.schedule_id in prio:
                    notice = notice.model_copy(update={"priority": prio[notice.schedule_id]})
                for rule, sink in route(self.config, notice):
                    pending.append(
                        Pending(
                            notice,
                            rule.name,
                            sink,
                            rule.dedup_window_s,
                            rec.topic,
                            rec.partition,
                            rec.offset,
                        )
                    )
            recorded = record(conn, pending, disabled)
            resolve_applied(conn, self.config, decoded.applied, db_now(conn))
        for sink, status in recorded:
            self.metrics.recorded.labels(sink).inc()
            if status in ("suppressed", "disabled"):
                self.metrics.dropped.labels(sink, status).inc()
        return len(recorded)

    # --- delivery ------------------------------------------------------------------
    def _deliver_loop(self, stop: threading.Event) -> None:
        conn: DictConnection | None = None
        while not stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = self._connect(stop)
                self.deliver_once(conn, stop)
            except (psycopg.Error, ServiceUnavailable) as exc:
                log.warning("outbox paused (%s)", exc)
                if conn is not None:
                    conn.close()
                conn = None
                stop.wait(self.settings.infra_pause_s)
                continue
            stop.wait(self.notify.tick_s)
        if conn is not None:
            conn.close()

    def deliver_once(self, conn: DictConnection, stop: threading.Event | None = None) -> int:
        """Count the backlog when it is time, flush due digests, then send every due
        message a sink may send now."""
        if time.monotonic() >= self._next_backlog_check:
            self._next_backlog_check = time.monotonic() + self.notify.backlog_check_s
            self.last_backlog = check_backlog(conn, self.config, db_now(conn))
        flush_due(conn, self.config, db_now(conn))
        sent = 0
        while stop is None or not stop.is_set():
            if self.outbox.send_one(conn, db_now(conn)) is None:
                break
            sent += 1
        return sent


def _rewind(consumer: Any) -> None:
    """Back to the committed offsets, so an unrecorded batch is read again."""
    for tp in consumer.assignment():
        committed = consumer.committed(tp)
        if committed is None:
            consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, committed)
