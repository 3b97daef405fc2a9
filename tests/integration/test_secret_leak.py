"""No secret leaks: a distinct password in every credential setting, real processes against
an unreachable PostgreSQL (each DSN form) and Kafka, and everything they printed, logged,
traced, exported as metrics or wrote to their topics searched for any of them."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from pydantic import SecretStr

from flagsched.runtime.settings import Settings
from flagsched.schemas.events import ScheduleDue, to_epoch_ms
from flagsched.schemas.headers import RecordHeaders
from tests.support.pipeline import settings_env, wait_until

pytestmark = pytest.mark.integration

TAG = uuid.uuid4().hex[:8]
# One password per credential setting and DSN form, with characters a URL must encode.
DB_PASSWORDS = {form: f"Db{form.capitalize()}@/{TAG}" for form in ("url", "query", "keyvalue")}
SASL_PASSWORD = f"Sasl@/{TAG}"
PLANTED = [*DB_PASSWORDS.values(), SASL_PASSWORD]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unreachable_dsn(form: str, port: int) -> str:
    password = DB_PASSWORDS[form]
    if form == "url":
        return f"postgresql://flagsched:{quote(password, safe='')}@127.0.0.1:{port}/flagsched"
    if form == "query":
        return (
            f"postgresql://flagsched@127.0.0.1:{port}/flagsched?password={quote(password, safe='')}"
        )
    return f"host=127.0.0.1 port={port} user=flagsched password='{password}' dbname=flagsched"


def leaks(text: str) -> list[str]:
    """Every planted secret found in ``text``, raw or URL-encoded."""
    return [s for s in PLANTED if s in text or quote(s, safe="") in text]


class Proc:
    """A real ``python -m flagsched.cli -v <command>`` with its stdout and stderr in files."""

    def __init__(self, tmp: Path, name: str, command: str, env: dict[str, str]) -> None:
        # command: "worker", "producer", "db migrate"
        self.out, self.err = tmp / f"{name}.out", tmp / f"{name}.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "flagsched.cli", "-v", *command.split()],
                env=env,
                stdout=out,
                stderr=err,
            )

    def text(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def says(self, *needles: str) -> bool:
        text = self.text()
        return all(n in text for n in needles)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def env_for(settings: Settings, tmp: Path, name: str, **extra: str) -> dict[str, str]:
    env = settings_env(settings)
    env.update(
        FLAGSCHED_TRACING="jsonl",
        FLAGSCHED_TRACING_JSONL_PATH=str(tmp / f"{name}.spans.jsonl"),
        FLAGSCHED_METRICS_PORT=str(closed_port()),
        **extra,
    )
    return env


def scrape(env: dict[str, str]) -> str:
    """The process's /metrics (the dispatcher's scrape also runs the backlog query)."""
    url = f"http://127.0.0.1:{env['FLAGSCHED_METRICS_PORT']}/metrics"

    def get() -> str:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(response.read().decode())
        except (urllib.error.URLError, OSError):
            return ""

    return wait_until(get, what=f"metrics at {url}", timeout_s=30)


def publish_due(settings: Settings) -> None:
    """One due wake-up (for a schedule the worker will fail to look up: the DB is gone)."""
    now = datetime.now(UTC)
    event = ScheduleDue(schedule_id=1, flag_key="leak.flag", scheduled_at=now, dispatched_at=now)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        producer.send(
            settings.topic_layout().due,
            key=b"leak.flag",
            value=event.model_dump_json().encode(),
            headers=RecordHeaders(attempt=1, due_ms=to_epoch_ms(now)).encode(),
        )
        producer.flush()
    finally:
        producer.close()


def topic_contents(settings: Settings) -> str:
    """Every record (key, value, headers) on the test's topics, as text."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False
    )
    try:
        parts = [
            TopicPartition(topic, p)
            for topic in (spec.name for spec in settings.topic_layout().specs())
            for p in consumer.partitions_for_topic(topic) or ()
        ]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        chunks: list[str] = []

        def drained() -> bool:
            for records in consumer.poll(timeout_ms=200).values():
                for r in records:
                    headers = b" ".join(k.encode() + b"=" + (v or b"") for k, v in r.headers)
                    chunks.append(b" ".join((r.key or b"", r.value or b"", headers)).decode())
            return all(consumer.position(tp) >= end for tp, end in ends.items())

        wait_until(drained, what="the test's topics read to their end", timeout_s=30)
    finally:
        consumer.close()
    return "\n".join(chunks)


def everything(tmp: Path, procs: list[Proc], scraped: list[str], settings: Settings) -> str:
    spans = [p.read_text(errors="replace") for p in tmp.glob("*.spans.jsonl")]
    return "\n".join([*(p.text() for p in procs), *spans, *scraped, topic_contents(settings)])


@pytest.mark.parametrize("form", ["url", "query", "keyvalue"])
def test_dispatcher_and_worker_never_show_a_database_password(make_settings, tmp_path, form):
    port = closed_port()
    settings = make_settings(
        kafka_sasl_mechanism="PLAIN",  # PLAINTEXT protocol: planted, not used, never shown
        kafka_sasl_username="flagsched",
        kafka_sasl_password=SASL_PASSWORD,
        breaker_failure_threshold=1,
        breaker_probe_base_s=0.2,
        breaker_probe_cap_s=0.5,
        connect_timeout_s=2.0,
        startup_timeout_s=5.0,
    ).with_database_url(unreachable_dsn(form, port))
    publish_due(settings)
    worker_env = env_for(settings, tmp_path, "worker")
    producer_env = env_for(settings, tmp_path, "producer")
    procs = [
        Proc(tmp_path, "worker", "worker", worker_env),
        Proc(tmp_path, "producer", "producer", producer_env),
        # gives up at once, printing the exception's text
        Proc(tmp_path, "migrate", "db migrate", env_for(settings, tmp_path, "migrate")),
    ]
    worker, producer, migrate = procs
    try:
        scraped = [scrape(worker_env), scrape(producer_env)]
        # The paths that name the database: the worker's attempt (the hot path) and its
        # breaker probe; the dispatcher's start-up wait and its failed round.
        wait_until(
            lambda: worker.says("paused in place", "breaker probe failed"),
            what="the worker failing to reach PostgreSQL",
            timeout_s=90,
        )
        wait_until(
            lambda: producer.says("waiting for PostgreSQL", "dispatch round failed"),
            what="the dispatcher failing to reach PostgreSQL",
            timeout_s=60,
        )
        wait_until(lambda: migrate.proc.poll() is not None, what="migrate giving up")
    finally:
        codes = [p.stop() for p in procs]
    text = everything(tmp_path, procs, scraped, settings)
    assert codes == [0, 0, 2], text[-3000:]
    assert migrate.says("flagsched: cannot connect to PostgreSQL at FLAGSCHED_DATABASE_URL=")
    assert leaks(text) == [], text[-3000:]
    # The messages are there, naming the setting and the host (redacted, not dropped).
    assert f"FLAGSCHED_DATABASE_URL=host=127.0.0.1 port={port} dbname=flagsched" in text
    assert "user=flagsched password=***" in text


def test_processes_that_give_up_on_kafka_never_show_its_password(make_settings, tmp_path):
    settings = make_settings(connect_timeout_s=1.0, startup_timeout_s=3.0)
    sasl = settings.model_copy(  # after the topics exist: the test's broker has no SASL
        update={
            "kafka_security_protocol": "SASL_PLAINTEXT",
            "kafka_sasl_mechanism": "PLAIN",
            "kafka_sasl_username": "flagsched",
            "kafka_sasl_password": SecretStr(SASL_PASSWORD),
        }
    )
    kafka = f"127.0.0.1:{closed_port()}"
    unreachable = sasl.with_database_url(unreachable_dsn("keyvalue", closed_port()))
    procs = [
        Proc(
            tmp_path,
            command,
            command,
            env_for(unreachable, tmp_path, command, FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS=kafka),
        )
        for command in ("worker", "producer")
    ]
    # They give up at the start-up deadline, printing the exception's text.
    wait_until(
        lambda: all(p.proc.poll() is not None for p in procs), what="giving up", timeout_s=60
    )
    codes = [p.stop() for p in procs]
    text = everything(tmp_path, procs, [], settings)
    assert codes == [2, 2], text[-3000:]
    assert text.count("flagsched: cannot reach Kafka at FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS") == 2
    assert leaks(text) == [], text[-3000:]
