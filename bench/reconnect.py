"""``python -m bench.reconnect``: how long Kafka clients stand still after a broker
outage has ended, by ``FLAGSCHED_KAFKA_RECONNECT_BACKOFF_MAX_MS``.

A private dev stack; for each ceiling (kafka-python's own 30,000 ms, and flagsched's
default 1,000 ms) and each round: a producer built by ``runtime.clients.make_producer``
sends a record every 50 ms, and a group consumer built by ``make_consumer`` polls the
topic; the broker is stopped for ``--outage-s`` and started again. The figures are the
time from the broker being ready again (its first metadata answer) to the producer's
first acknowledged send, and to the consumer's first record sent after that moment
(by a fresh producer, which has no backoff of its own). Results go to
bench/results/reconnect.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from kafka.admin import NewTopic

from flagsched.devstack.stack import DevStack
from flagsched.runtime.clients import make_admin, make_consumer, make_producer
from flagsched.runtime.settings import Settings, load_settings

RESULTS = Path(__file__).parent / "results" / "reconnect.json"
#: kafka-python 3.0's own ceiling, and flagsched's default.
CEILINGS_MS = (30000, 1000)


class _Sender(threading.Thread):
    """Sends a record every 50 ms; remembers when each send was acknowledged."""

    def __init__(self, producer: Any, topic: str) -> None:
        super().__init__(daemon=True)
        self.producer, self.topic = producer, topic
        self.acked: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.producer.send(self.topic, value=b"tick").get(timeout=60)
                self.acked.append(time.monotonic())
            except Exception:  # the outage: keep trying, as the dispatcher does
                self.stop.wait(0.05)
            self.stop.wait(0.05)


def _round(settings: Settings, stack: DevStack, topic: str, outage_s: float) -> dict[str, float]:
    producer = make_producer(settings)
    consumer = make_consumer(settings, group_id=f"reconnect-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([topic])
    sender = _Sender(producer, topic)
    sender.start()
    try:
        deadline = time.monotonic() + 60
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(timeout_ms=200)
        stack.kafka.stop()
        time.sleep(outage_s)
        stack.kafka.start()  # returns once a metadata request succeeds
        ready = time.monotonic()
        marker = f"after-{ready}".encode()
        fresh = KafkaProducer(**settings.kafka_client_config())
        fresh.send(topic, value=marker).get(timeout=30)
        fresh.close()
        consumed: float | None = None
        while consumed is None and time.monotonic() < ready + 120:
            try:
                batches = consumer.poll(timeout_ms=100)
            except Exception:
                continue
            if any(r.value == marker for rs in batches.values() for r in rs):
                consumed = time.monotonic()
        while not [t for t in sender.acked if t > ready] and time.monotonic() < ready + 120:
            time.sleep(0.05)
        acked = min((t for t in sender.acked if t > ready), default=float("nan"))
        return {
            "producer_s": round(acked - ready, 2),
            "consumer_s": round((consumed if consumed is not None else float("nan")) - ready, 2),
        }
    finally:
        sender.stop.set()
        sender.join(timeout=70)
        producer.close(timeout=5)
        consumer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reconnect", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--outage-s", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="flagsched-reconnect-"))
    stack = DevStack(work / "devstack", load_settings().dev_home)
    endpoints = stack.up()
    results: dict[str, Any] = {}
    try:
        base = load_settings().model_copy(
            update={"kafka_bootstrap_servers": endpoints.kafka_bootstrap_servers}
        )
        topic = f"reconnect-{uuid.uuid4().hex[:8]}"
        admin = make_admin(base)
        admin.create_topics([NewTopic(topic, 1, 1)])
        admin.close()
        for ceiling in CEILINGS_MS:
            settings = base.model_copy(update={"kafka_reconnect_backoff_max_ms": ceiling})
            rounds = [_round(settings, stack, topic, args.outage_s) for _ in range(args.rounds)]
            summary = {
                key: {
                    "median": statistics.median(r[key] for r in rounds),
                    "max": max(r[key] for r in rounds),
                }
                for key in ("producer_s", "consumer_s")
            }
            results[str(ceiling)] = {"rounds": rounds, **summary}
            print(f"reconnect backoff ceiling {ceiling} ms: {rounds}", flush=True)
    finally:
        stack.down()
    doc = {
        "benchmark": "reconnect",
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "outage_s": args.outage_s,
        "by_ceiling_ms": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"reconnect: written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
