"""Spans reach an OTLP/HTTP collector as configured by the standard OTEL_* variables.

No Kafka or PostgreSQL: the collector is tests/support/otlp_receiver.py on a local
port, and the spans are those a dispatcher and a worker open for one schedule.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from flagsched.runtime.settings import Settings
from flagsched.runtime.telemetry.tracing import Tracing, setup_tracing
from flagsched.schemas import __version__
from flagsched.schemas.headers import RecordHeaders
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan

DUE = "flagsched.schedule-due"
TIER = "flagsched.retry.5s"


def one_schedule_retried_once(tracing: Tracing) -> tuple[str, list[str]]:
    """Send, attempt 1 fails, attempt 2 applies: (trace id, traceparents in order)."""
    with tracing.send(topic=DUE, key=b"checkout", schedule_id=42, flag_key="checkout") as sent:
        pass
    traceparents = [sent.traceparent]
    for attempt, (topic, outcome) in enumerate([(DUE, "retry"), (TIER, "applied")], start=1):
        with tracing.process(
            topic=topic,
            partition=2,
            offset=100 + attempt,
            key=b"checkout",
            group="flagsched-workers",
            headers=RecordHeaders(attempt=attempt, due_ms=0, traceparent=traceparents[-1]),
            schedule_id=42,
            flag_key="checkout",
            attempt=attempt,
            tier="due" if topic == DUE else "5",
        ) as span:
            span.finish(
                outcome,
                failed=outcome == "retry",
                error_class="lock_timeout" if outcome == "retry" else None,
            )
        traceparents.append(span.traceparent)
    assert all(traceparents)
    return sent.trace_id, [tp for tp in traceparents if tp]


def span_id(traceparent: str) -> str:
    return traceparent.split("-")[2]


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    with OtlpReceiver() as started:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", started.endpoint)
        yield started


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_send_and_two_attempts_arrive_as_one_linked_trace(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, compression: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", compression)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "flagsched-test")
    provider = setup_tracing(Settings())
    assert provider is not None, "an OTLP endpoint alone turns tracing on"
    trace_id, traceparents = one_schedule_retried_once(Tracing(provider))
    provider.shutdown()  # flushes the batch processor; nothing waits for its schedule

    spans: list[ReceivedSpan] = receiver.spans
    assert receiver.errors == []
    assert [r.get("Content-Encoding", "identity") for r in receiver.requests] == [
        "gzip" if compression == "gzip" else "identity"
    ] * len(receiver.requests)
    assert [s.name for s in spans] == [f"send {DUE}", f"process {DUE}", f"process {TIER}"]
    send, first, second = spans
    assert {s.trace_id for s in spans} == {trace_id}
    assert [s.span_id for s in spans] == [span_id(tp) for tp in traceparents]
    assert send.parent_span_id == "" and send.links == ()
    assert first.parent_span_id == send.span_id
    assert second.parent_span_id == first.span_id
    assert [(link.trace_id, link.span_id) for link in first.links] == [(trace_id, send.span_id)]
    assert [(link.trace_id, link.span_id) for link in second.links] == [(trace_id, first.span_id)]
    assert [s.kind for s in spans] == [
        Span.SPAN_KIND_PRODUCER,
        Span.SPAN_KIND_CONSUMER,
        Span.SPAN_KIND_CONSUMER,
    ]
    assert first.status_code == Status.STATUS_CODE_ERROR
    assert first.attributes["error.type"] == "lock_timeout"
    assert second.status_code == Status.STATUS_CODE_OK
    assert second.attributes["messaging.kafka.offset"] == 102
    assert second.attributes["messaging.destination.partition.id"] == "2"
    assert second.attributes["flagsched.outcome"] == "applied"
    assert send.resource["service.name"] == "flagsched-test"
    assert send.resource["service.version"] == __version__


def test_the_traces_endpoint_variable_wins(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # nothing there
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{receiver.endpoint}/v1/traces")
    provider = setup_tracing(Settings())
    assert provider is not None
    one_schedule_retried_once(Tracing(provider))
    provider.shutdown()
    assert len(receiver.spans) == 3 and receiver.errors == []
