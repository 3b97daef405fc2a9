"""Tracing: one trace per schedule, attempts chained by parent and link, on a private provider."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import messaging_attributes as msg
from opentelemetry.semconv.attributes import error_attributes
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from flagsched.consumer.results import Outcome
from flagsched.runtime.errors import ConfigError
from flagsched.runtime.telemetry.tracing import ERROR_TYPE, AttemptSpan, Tracing, setup_tracing
from flagsched.schemas import __version__
from flagsched.schemas.headers import RecordHeaders
from tests.support.required import in_ci

DUE = "flagsched.schedule-due"
TIER = "flagsched.retry.5s"
GROUP = "flagsched-workers"


@pytest.fixture(autouse=True)
def _no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an environment without OTEL_* settings."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def memory() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Tracing(provider), exporter
    provider.shutdown()


def headers(attempt: int, traceparent: str | None) -> RecordHeaders:
    return RecordHeaders(attempt=attempt, due_ms=1_700_000_000_000, traceparent=traceparent)


def attempt_span(
    tracing: Tracing, topic: str, offset: int, hdrs: RecordHeaders | None, outcome: str, **kw: str
) -> AttemptSpan:
    with tracing.process(
        topic=topic,
        partition=3,
        offset=offset,
        key=b"checkout",
        group=GROUP,
        headers=hdrs,
        schedule_id=42,
        flag_key="checkout",
        attempt=hdrs.attempt if hdrs else None,
        tier="due" if topic == DUE else "5",
    ) as span:
        # What an outcome means is the consumer's Outcome type's to say.
        span.finish(outcome, failed=Outcome(outcome).is_failure, lateness_ms=12.5, **kw)
    return span


def w3c(context: trace.SpanContext) -> str:
    carrier: dict[str, str] = {}
    span = trace.NonRecordingSpan(context)
    TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(span))
    return carrier["traceparent"]


def test_a_schedule_that_fails_twice_then_applies_is_one_chained_trace(
    memory: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = memory
    with tracing.send(topic=DUE, key=b"checkout", schedule_id=42, flag_key="checkout") as sent:
        pass
    assert sent.traceparent is not None
    one = attempt_span(
        tracing, DUE, 7, headers(1, sent.traceparent), "retry", error_class="lock_timeout"
    )
    two = attempt_span(
        tracing, TIER, 8, headers(2, one.traceparent), "retry", error_class="lock_timeout"
    )
    three = attempt_span(tracing, TIER, 9, headers(3, two.traceparent), "applied")

    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == [f"send {DUE}", f"process {DUE}", *[f"process {TIER}"] * 2]
    assert {s.context.trace_id for s in spans if s.context} == {int(sent.trace_id, 16)}
    assert sent.trace_id == one.trace_id == two.trace_id == three.trace_id
    send, *attempts = spans
    assert send.parent is None and not send.links  # dispatch starts the schedule's history
    for previous, span in zip(spans, attempts, strict=False):
        assert previous.context is not None and span.parent is not None
        assert span.parent.span_id == previous.context.span_id
        assert span.parent.trace_id == previous.context.trace_id
        assert span.parent.is_remote
        assert [link.context.span_id for link in span.links] == [previous.context.span_id]
    # Each handle's traceparent names its own span, as the W3C propagator writes it.
    for handle, span in zip((sent, one, two, three), spans, strict=True):
        assert span.context is not None
        assert handle.traceparent == w3c(span.context)
        assert handle.traceparent.startswith(f"00-{span.context.trace_id:032x}-")


def test_statuses_outcomes_and_lateness(memory: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = memory
    attempt_span(
        tracing, DUE, 1, None, "retry", error_class="lock_timeout", error_message="lock wait"
    )
    attempt_span(tracing, DUE, 2, None, "dead", error_class="flag_not_found")
    attempt_span(tracing, DUE, 3, None, "poison")
    attempt_span(tracing, DUE, 4, None, "applied")
    attempt_span(tracing, DUE, 5, None, "superseded")
    attempt_span(tracing, DUE, 6, None, "pause", error_class="infrastructure")
    retry, dead, poison, applied, superseded, pause = exporter.get_finished_spans()

    assert retry.status.status_code is StatusCode.ERROR
    assert retry.status.description == "lock wait"
    assert retry.attributes is not None and retry.attributes[ERROR_TYPE] == "lock_timeout"
    assert dead.status.status_code is StatusCode.ERROR
    assert dead.status.description == "flag_not_found"
    assert poison.status.status_code is StatusCode.ERROR
    assert poison.attributes is not None and poison.attributes[ERROR_TYPE] == "_OTHER"
    for ok in (applied, superseded):
        assert ok.status.status_code is StatusCode.OK
        assert ok.attributes is not None and ERROR_TYPE not in ok.attributes
    assert [s.attributes and s.attributes["flagsched.outcome"] for s in (retry, applied)] == [
        "retry",
        "applied",
    ]
    assert applied.attributes is not None and applied.attributes["flagsched.lateness_ms"] == 12.5
    # PostgreSQL unreachable: the record is retried in place, but this attempt failed.
    assert pause.status.status_code is StatusCode.ERROR
    assert pause.attributes is not None and pause.attributes[ERROR_TYPE] == "infrastructure"


def test_a_batch_of_attempts_open_together_keep_their_own_parents(
    memory: tuple[Tracing, InMemorySpanExporter],
) -> None:
    """The worker attempts a poll's records in one transaction: spans overlap."""
    tracing, exporter = memory
    sends = []
    for schedule in (1, 2):
        with tracing.send(topic=DUE, key=b"k", schedule_id=schedule, flag_key="k") as sent:
            sends.append(sent)
    with ExitStack() as stack:
        handles = [
            stack.enter_context(
                tracing.process(
                    topic=DUE,
                    partition=0,
                    offset=offset,
                    key=b"k",
                    group=GROUP,
                    headers=headers(1, traceparent),
                    schedule_id=None,
                    flag_key="k",
                    attempt=1,
                    tier="due",
                )
            )
            for offset, traceparent in enumerate([sends[0].traceparent, sends[1].traceparent, None])
        ]
        for handle in handles:
            handle.finish("applied", failed=False)
    assert trace.get_current_span() is trace.INVALID_SPAN
    send_1, send_2, *attempts = exporter.get_finished_spans()
    by_offset = {s.attributes and s.attributes["messaging.kafka.offset"]: s for s in attempts}
    for attempt, send in ((by_offset[0], send_1), (by_offset[1], send_2)):
        assert attempt.parent is not None and send.context is not None
        assert attempt.parent.span_id == send.context.span_id
    assert by_offset[2].parent is None  # not a child of the spans current around it
    assert [h.trace_id for h in handles[:2]] == [sends[0].trace_id, sends[1].trace_id]


def test_attributes_follow_the_messaging_conventions(
    memory: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = memory
    with tracing.send(
        topic=DUE, key=b"checkout", schedule_id=42, flag_key="checkout", attempt=1
    ) as sent:
        pass
    attempt_span(tracing, DUE, 7, headers(1, sent.traceparent), "applied")
    send, proc = exporter.get_finished_spans()

    assert send.kind is SpanKind.PRODUCER
    assert dict(send.attributes or {}) == {
        msg.MESSAGING_SYSTEM: "kafka",
        msg.MESSAGING_OPERATION_TYPE: "send",
        msg.MESSAGING_OPERATION_NAME: "send",
        msg.MESSAGING_DESTINATION_NAME: DUE,
        msg.MESSAGING_KAFKA_MESSAGE_KEY: "checkout",
        "flagsched.schedule.id": 42,
        "flagsched.flag.key": "checkout",
        "flagsched.attempt": 1,
    }
    assert proc.kind is SpanKind.CONSUMER
    assert dict(proc.attributes or {}) == {
        msg.MESSAGING_SYSTEM: "kafka",
        msg.MESSAGING_OPERATION_TYPE: "process",
        msg.MESSAGING_OPERATION_NAME: "process",
        msg.MESSAGING_DESTINATION_NAME: DUE,
        msg.MESSAGING_CONSUMER_GROUP_NAME: GROUP,
        msg.MESSAGING_DESTINATION_PARTITION_ID: "3",
        msg.MESSAGING_KAFKA_OFFSET: 7,
        msg.MESSAGING_KAFKA_MESSAGE_KEY: "checkout",
        "flagsched.schedule.id": 42,
        "flagsched.flag.key": "checkout",
        "flagsched.attempt": 1,
        "flagsched.tier": "due",
        "flagsched.outcome": "applied",
        "flagsched.lateness_ms": 12.5,
    }
    assert error_attributes.ERROR_TYPE == ERROR_TYPE
    assert proc.instrumentation_scope is not None
    assert proc.instrumentation_scope.name == "flagsched"
    assert proc.instrumentation_scope.version == __version__


def test_a_key_that_is_not_utf8_is_left_out_and_unknowns_are_not_set(
    memory: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = memory
    with tracing.process(
        topic=DUE,
        partition=0,
        offset=1,
        key=b"\xff\xfe",
        group=GROUP,
        headers=None,
        schedule_id=None,
        flag_key=None,
        attempt=None,
        tier=None,
    ) as span:
        span.annotate(schedule_id=9, flag_key=None, attempt=2)
    attrs = dict(exporter.get_finished_spans()[0].attributes or {})
    assert msg.MESSAGING_KAFKA_MESSAGE_KEY not in attrs
    assert "flagsched.flag.key" not in attrs and "flagsched.tier" not in attrs
    assert attrs["flagsched.schedule.id"] == 9 and attrs["flagsched.attempt"] == 2


@pytest.mark.parametrize(
    "traceparent", [None, "", "not-a-traceparent", "00-" + "0" * 32 + "-" + "0" * 16 + "-01"]
)
def test_no_usable_traceparent_starts_a_new_trace_without_links(
    memory: tuple[Tracing, InMemorySpanExporter], traceparent: str | None
) -> None:
    tracing, exporter = memory
    span = attempt_span(tracing, DUE, 1, headers(1, traceparent), "applied")
    (finished,) = exporter.get_finished_spans()
    assert finished.parent is None and not finished.links
    assert len(span.trace_id) == 32 and span.trace_id != "0" * 32


def test_the_span_is_current_inside_and_not_after(
    memory: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, _ = memory
    before = trace.get_current_span()
    with tracing.send(topic=DUE, key=None, schedule_id=1, flag_key="f") as sent:
        inside = trace.get_current_span().get_span_context()
        assert f"{inside.trace_id:032x}" == sent.trace_id
    assert trace.get_current_span() is before


def test_an_escaping_exception_is_recorded_and_reraised(
    memory: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = memory
    with (
        pytest.raises(ConnectionError, match="db gone"),
        tracing.process(
            topic=DUE,
            partition=0,
            offset=1,
            key=b"k",
            group=GROUP,
            headers=None,
            schedule_id=1,
            flag_key="k",
            attempt=1,
            tier="due",
        ),
    ):
        raise ConnectionError("db gone")
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ConnectionError: db gone"
    assert span.attributes is not None and span.attributes[ERROR_TYPE] == "ConnectionError"
    assert [e.name for e in span.events] == ["exception"]
    assert span.end_time is not None


def test_without_a_provider_everything_is_a_noop() -> None:
    global_provider = trace.get_tracer_provider()
    tracing = Tracing()
    assert not tracing.enabled
    with tracing.send(topic=DUE, key=b"k", schedule_id=1, flag_key="k") as sent:
        assert sent.trace_id == "" and sent.traceparent is None
    with tracing.process(
        topic=DUE,
        partition=0,
        offset=0,
        key=None,
        group=GROUP,
        headers=headers(2, "00-" + "a" * 32 + "-" + "b" * 16 + "-01"),
        schedule_id=None,
        flag_key=None,
        attempt=None,
        tier=None,
    ) as span:
        span.finish("retry", failed=True, error_class="x", error_message="y", lateness_ms=1.0)
        span.annotate(schedule_id=1, flag_key="k", attempt=1)
    assert span.trace_id == "" and span.traceparent is None
    with (
        pytest.raises(ValueError, match="boom"),
        tracing.send(topic=DUE, key=None, schedule_id=1, flag_key="k"),
    ):
        raise ValueError("boom")
    assert trace.get_tracer_provider() is global_provider


def test_a_traceparent_is_what_the_w3c_propagator_reads(
    memory: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, _ = memory
    with tracing.send(topic=DUE, key=None, schedule_id=1, flag_key="f") as sent:
        pass
    assert sent.traceparent is not None
    ctx = TraceContextTextMapPropagator().extract({"traceparent": sent.traceparent})
    sc = trace.get_current_span(ctx).get_span_context()
    assert sc.is_valid and f"{sc.trace_id:032x}" == sent.trace_id and sc.trace_flags.sampled


# --- setup_tracing ---------------------------------------------------------------------


def settings(**fields: object) -> SimpleNamespace:
    return SimpleNamespace(**fields)


def send_and_process(provider: TracerProvider | None) -> None:
    """A send and one attempt on ``provider``, then shut it down (which flushes)."""
    assert provider is not None
    tracing = Tracing(provider)
    with tracing.send(topic=DUE, key=b"k", schedule_id=1, flag_key="k") as sent:
        pass
    with tracing.process(
        topic=DUE,
        partition=1,
        offset=5,
        key=b"k",
        group=GROUP,
        headers=headers(1, sent.traceparent),
        schedule_id=1,
        flag_key="k",
        attempt=1,
        tier="due",
    ) as span:
        span.finish("applied", failed=False)
    provider.shutdown()


def test_jsonl_writes_one_parseable_object_per_span(tmp_path: Path) -> None:
    path = tmp_path / "traces" / "spans.jsonl"
    send_and_process(setup_tracing(settings(tracing="jsonl", tracing_jsonl_path=path)))
    send, proc = (json.loads(line) for line in path.read_text().splitlines())
    assert send["name"] == f"send {DUE}" and proc["name"] == f"process {DUE}"
    assert send["kind"] == "PRODUCER" and proc["kind"] == "CONSUMER"
    assert len(send["trace_id"]) == 32 and proc["trace_id"] == send["trace_id"]
    assert send["parent_span_id"] is None and proc["parent_span_id"] == send["span_id"]
    assert proc["links"] == [
        {"trace_id": send["trace_id"], "span_id": send["span_id"], "attributes": {}}
    ]
    assert proc["attributes"]["messaging.kafka.offset"] == 5
    assert proc["attributes"]["flagsched.outcome"] == "applied"
    assert proc["status"] == {"code": "OK", "description": None}
    assert send["start_ns"] <= send["end_ns"] <= proc["start_ns"] <= proc["end_ns"]
    assert send["service"] == "flagsched"


def test_jsonl_needs_a_path_it_can_write(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="FLAGSCHED_TRACING_JSONL_PATH"):
        setup_tracing(settings(tracing="jsonl"))
    with pytest.raises(ConfigError, match="cannot write"):
        setup_tracing(settings(tracing="jsonl", tracing_jsonl_path=tmp_path))  # a directory


def test_console_prints_spans(capsys: pytest.CaptureFixture[str]) -> None:
    send_and_process(setup_tracing(settings(tracing="console")))
    out = capsys.readouterr().out
    assert f'"name": "send {DUE}"' in out and f'"name": "process {DUE}"' in out


def test_otel_console_exporter_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    send_and_process(setup_tracing(settings()))  # tracing defaults to "otel"
    assert f'"name": "process {DUE}"' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("fields", "env"),
    [
        ({"tracing": "off"}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}),
        ({"tracing": "console"}, {"OTEL_SDK_DISABLED": "true"}),
        ({}, {"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "console"}),
        ({}, {}),  # nothing configured
        ({}, {"OTEL_TRACES_EXPORTER": "none"}),
        ({}, {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318"}),
    ],
)
def test_no_provider_when_tracing_is_off(
    monkeypatch: pytest.MonkeyPatch, fields: dict[str, str], env: dict[str, str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert setup_tracing(settings(**fields)) is None


def test_an_otlp_endpoint_alone_turns_otlp_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/v1/traces")
    provider = setup_tracing(settings())
    assert provider is not None
    provider.shutdown()  # nothing was recorded, so nothing is sent


@pytest.mark.parametrize(
    ("fields", "env", "message"),
    [
        ({"tracing": "verbose"}, {}, "FLAGSCHED_TRACING"),
        ({}, {"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        (
            {},
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "http/json",
        ),
    ],
)
def test_unsupported_configuration_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, fields: dict[str, str], env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        setup_tracing(settings(**fields))


@pytest.mark.skipif(
    importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is not None and not in_ci(),
    reason="the gRPC exporter is installed here; CI installs the dev extra without it, so"
    " there this test runs (and fails if the exporter is there)",
)
@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"]
)
def test_grpc_says_which_package_to_install(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv(variable, "grpc")
    with pytest.raises(ConfigError, match="pip install opentelemetry-exporter-otlp-proto-grpc"):
        setup_tracing(settings())


def test_resource_names_the_service_and_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    provider = setup_tracing(settings())
    assert provider is not None
    assert provider.resource.attributes["service.name"] == "flagsched"
    assert provider.resource.attributes["service.version"] == __version__
    provider.shutdown()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "flagsched-eu")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=prod")
    provider = setup_tracing(settings())
    assert provider is not None
    assert provider.resource.attributes["service.name"] == "flagsched-eu"
    assert provider.resource.attributes["deployment.environment.name"] == "prod"
    provider.shutdown()
