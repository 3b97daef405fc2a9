"""OpenTelemetry traces: one trace per schedule, from its dispatch to its last attempt.

The dispatcher's PRODUCER span ``send {topic}`` starts the trace. Each processing
attempt is a CONSUMER span ``process {topic}``, child of and linked to the span in
the consumed record's ``traceparent``; the records it sends carry its own. Attributes
follow the current OpenTelemetry messaging semantic conventions, plus ``flagsched.*``.
The contrib ``opentelemetry-instrumentation-kafka-python`` is not used: it wraps only
``KafkaProducer.send`` and ``KafkaConsumer.__next__`` (the worker calls ``poll()``),
sets older attribute names (``messaging.destination``, ``messaging.kafka.partition``)
and knows nothing of attempts, tiers or outcomes. Nothing here touches
OpenTelemetry's globals (tracer provider, propagator); ``Tracing()`` is a no-op.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import export as sdk_export
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from flagsched.runtime.errors import ConfigError
from flagsched.schemas import __version__

if TYPE_CHECKING:
    from flagsched.schemas.headers import RecordHeaders

log = logging.getLogger(__name__)

#: Outcomes whose span gets status ERROR and ``error.type``; any other gets OK.
ERROR_TYPE = "error.type"
ENDPOINT, TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
Attrs = dict[str, AttributeValue]
_PROPAGATOR = TraceContextTextMapPropagator()
_H = TypeVar("_H")


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def setup_tracing(settings: object) -> TracerProvider | None:
    """A private TracerProvider as configured (see docs/observability.md), or None.

    Its ``shutdown()`` exports the spans still queued; call it when the process ends.
    """
    mode = getattr(settings, "tracing", "otel")
    if mode not in ("off", "otel", "console", "jsonl"):
        raise ConfigError(f"FLAGSCHED_TRACING: {mode!r} is not one of off, otel, console, jsonl")
    if mode == "off" or _env("OTEL_SDK_DISABLED").lower() == "true":
        return None
    if mode == "jsonl":
        path = getattr(settings, "tracing_jsonl_path", None)
        if path is None:
            raise ConfigError("FLAGSCHED_TRACING=jsonl needs FLAGSCHED_TRACING_JSONL_PATH")
        exporter = JsonLinesSpanExporter(Path(path))
        processors: list[SpanProcessor] = [sdk_export.SimpleSpanProcessor(exporter)]
    else:
        names = [mode] if mode == "console" else _env("OTEL_TRACES_EXPORTER").lower().split(",")
        if names == [""]:  # unset: OTLP if an endpoint is configured, else no tracing
            names = ["otlp"] if _env(ENDPOINT) or _env(TRACES_ENDPOINT) else []
        processors = [_processor(n.strip()) for n in names if n.strip() not in ("", "none")]
    if not processors:
        return None
    # Our resource defaults first, then OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME on top.
    defaults = Resource.create({"service.name": "flagsched", "service.version": __version__})
    provider = TracerProvider(resource=defaults.merge(OTELResourceDetector().detect()))
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def _processor(name: str) -> SpanProcessor:
    if name == "console":
        return sdk_export.SimpleSpanProcessor(sdk_export.ConsoleSpanExporter(out=sys.stdout))
    if name != "otlp":
        raise ConfigError(f"OTEL_TRACES_EXPORTER: {name!r} is not one of otlp, console, none")
    protocol = _env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or _env("OTEL_EXPORTER_OTLP_PROTOCOL")
    protocol = protocol.lower() or "http/protobuf"
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # endpoint, headers, timeout, compression... from OTEL_EXPORTER_OTLP_*
        return sdk_export.BatchSpanProcessor(OTLPSpanExporter())
    if protocol != "grpc":
        raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not http/protobuf or grpc")
    try:
        grpc = importlib.import_module("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
    except ImportError as exc:
        raise ConfigError(
            "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc (pip"
            " install opentelemetry-exporter-otlp-proto-grpc); or use http/protobuf (port 4318)"
        ) from exc
    return sdk_export.BatchSpanProcessor(cast(sdk_export.SpanExporter, grpc.OTLPSpanExporter()))


class SendSpan:
    """The span of one send: put :attr:`traceparent` in the record's headers."""

    __slots__ = ("_span", "trace_id", "traceparent")

    def __init__(self, span: Span | None) -> None:
        self._span = span
        sc = span.get_span_context() if span is not None else trace.INVALID_SPAN_CONTEXT
        self.trace_id = f"{sc.trace_id:032x}" if sc.is_valid else ""  # "" when tracing is off
        # this span's W3C traceparent, as TraceContextTextMapPropagator writes it
        traceparent = f"00-{self.trace_id}-{sc.span_id:016x}-{sc.trace_flags:02x}"
        self.traceparent = traceparent if sc.is_valid else None


class AttemptSpan(SendSpan):
    """One processing attempt; every record sent because of it carries :attr:`traceparent`."""

    __slots__ = ()

    def finish(
        self,
        outcome: str,
        *,
        failed: bool,
        error_class: str | None = None,
        error_message: str | None = None,
        lateness_ms: float | None = None,
    ) -> None:
        """Record the outcome; a failed attempt (the caller knows what its outcomes mean)
        gets status ERROR with the error as its description."""
        if (span := self._span) is None:
            return
        span.set_attribute("flagsched.outcome", outcome)
        if lateness_ms is not None:
            span.set_attribute("flagsched.lateness_ms", float(lateness_ms))
        if failed:
            span.set_attribute(ERROR_TYPE, error_class or "_OTHER")
            span.set_status(Status(StatusCode.ERROR, error_message or error_class or outcome))
        else:
            span.set_status(Status(StatusCode.OK))

    def annotate(self, schedule_id: int | None, flag_key: str | None, attempt: int | None) -> None:
        """Set flagsched attributes learnt while processing (None leaves one as it is)."""
        if self._span is not None:
            self._span.set_attributes(_flagsched_attrs(schedule_id, flag_key, attempt, None))


_NOOP_ATTEMPT = nullcontext(AttemptSpan(None))
_NOOP_SEND = nullcontext(SendSpan(None))


def _flagsched_attrs(
    schedule_id: int | None, flag_key: str | None, attempt: int | None, tier: str | None
) -> Attrs:
    values = {"schedule.id": schedule_id, "flag.key": flag_key, "attempt": attempt, "tier": tier}
    return {f"flagsched.{k}": v for k, v in values.items() if v is not None}


def _kafka_attrs(operation: str, topic: str, key: bytes | None) -> Attrs:
    attrs: Attrs = {
        "messaging.system": "kafka",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": topic,
    }
    # semconv: a key without a canonical string form is left out
    with contextlib.suppress(UnicodeDecodeError):
        if key is not None:
            attrs["messaging.kafka.message.key"] = key.decode("utf-8")
    return attrs


@contextmanager
def _activate(span: Span, handle: _H) -> Iterator[_H]:
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield handle
    except Exception as exc:  # recorded, then re-raised
        span.set_attribute(ERROR_TYPE, type(exc).__qualname__)
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        otel_context.detach(token)
        span.end()


class Tracing:
    """Spans of sends and processing attempts on a private provider (None: no-op)."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self._tracer = None if provider is None else provider.get_tracer("flagsched", __version__)

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def process(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        group: str,
        headers: RecordHeaders | None,
        schedule_id: int | None,
        flag_key: str | None,
        attempt: int | None,
        tier: str | None,
    ) -> AbstractContextManager[AttemptSpan]:
        """A CONSUMER span ``process {topic}`` around one processing attempt."""
        if self._tracer is None:
            return _NOOP_ATTEMPT
        attrs = _kafka_attrs("process", topic, key)
        attrs["messaging.consumer.group.name"] = group
        attrs["messaging.destination.partition.id"] = str(partition)
        attrs["messaging.kafka.offset"] = offset
        attrs.update(_flagsched_attrs(schedule_id, flag_key, attempt, tier))
        parent, links = Context(), []
        if headers is not None and headers.traceparent:
            remote = _PROPAGATOR.extract({"traceparent": headers.traceparent})
            previous = trace.get_current_span(remote).get_span_context()
            if previous.is_valid:  # a malformed traceparent starts a new trace
                parent, links = remote, [Link(previous)]
        span = self._tracer.start_span(f"process {topic}", parent, SpanKind.CONSUMER, attrs, links)
        return _activate(span, AttemptSpan(span))

    def send(
        self, *, topic: str, key: bytes | None, schedule_id: int, flag_key: str, attempt: int = 1
    ) -> AbstractContextManager[SendSpan]:
        """A PRODUCER span ``send {topic}``, the root of a new trace."""
        if self._tracer is None:
            return _NOOP_SEND
        attrs = _kafka_attrs("send", topic, key)
        attrs.update(_flagsched_attrs(schedule_id, flag_key, attempt, None))
        span = self._tracer.start_span(f"send {topic}", Context(), SpanKind.PRODUCER, attrs)
        return _activate(span, SendSpan(span))


class JsonLinesSpanExporter(sdk_export.SpanExporter):
    """Appends one JSON object per finished span, one per line, to ``path``."""

    def __init__(self, path: Path) -> None:
        self._path, self._lock = path, threading.Lock()
        try:  # fail at start-up, not at the first span
            path.parent.mkdir(parents=True, exist_ok=True)
            path.open("a", encoding="utf-8").close()
        except OSError as exc:
            raise ConfigError(f"FLAGSCHED_TRACING_JSONL_PATH: cannot write {path}: {exc}") from exc

    def export(self, spans: Sequence[ReadableSpan]) -> sdk_export.SpanExportResult:
        text = "".join(json.dumps(span_to_dict(s), default=str) + "\n" for s in spans)
        try:
            with self._lock, self._path.open("a", encoding="utf-8") as out:
                out.write(text)
        except OSError as exc:
            log.warning("cannot write spans to %s: %s", self._path, exc)
            return sdk_export.SpanExportResult.FAILURE
        return sdk_export.SpanExportResult.SUCCESS


def _ids(sc: trace.SpanContext | None) -> dict[str, str | None]:
    hexes = (f"{sc.trace_id:032x}", f"{sc.span_id:016x}") if sc else (None, None)
    return dict(zip(("trace_id", "span_id"), hexes, strict=True))


def span_to_dict(span: ReadableSpan) -> dict[str, Any]:
    """The JSON-lines record of a finished span (ids in lower-case hex)."""
    return {
        "name": span.name,
        "kind": span.kind.name,
        **_ids(span.get_span_context()),
        "parent_span_id": _ids(span.parent)["span_id"],
        "links": [
            {**_ids(lk.context), "attributes": dict(lk.attributes or {})} for lk in span.links
        ],
        "attributes": dict(span.attributes or {}),
        "events": [
            {"name": e.name, "time_ns": e.timestamp, "attributes": dict(e.attributes or {})}
            for e in span.events
        ],
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": {"code": span.status.status_code.name, "description": span.status.description},
        "service": span.resource.attributes.get("service.name"),
    }
