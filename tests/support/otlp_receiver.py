"""A tiny OTLP/HTTP trace receiver for tests: ``POST /v1/traces``, protobuf, optional gzip.

    with OtlpReceiver() as receiver:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
        ...
        spans = receiver.wait_for_spans(3)

It listens on 127.0.0.1 on a free port, in a thread, decodes each request with
``ExportTraceServiceRequest`` and keeps the spans. Requests it cannot handle are
answered with a 4xx and noted in :attr:`OtlpReceiver.errors`.
"""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

TRACES_PATH = "/v1/traces"


@dataclass(frozen=True)
class ReceivedLink:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the collector saw it (ids as lower-case hex, "" when absent)."""

    name: str
    kind: int  # opentelemetry.proto.trace.v1.trace_pb2.Span.SpanKind
    trace_id: str
    span_id: str
    parent_span_id: str
    links: tuple[ReceivedLink, ...]
    attributes: dict[str, Any]
    status_code: int  # Status.StatusCode: 0 unset, 1 ok, 2 error
    status_message: str
    resource: dict[str, Any]
    events: tuple[str, ...]


def any_value(value: AnyValue) -> Any:
    """The Python value of an OTLP AnyValue."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, which)


def attributes(pairs: Any) -> dict[str, Any]:
    """An OTLP KeyValue list as a dict."""
    out: dict[str, Any] = {}
    for kv in pairs:
        assert isinstance(kv, KeyValue)
        out[kv.key] = any_value(kv.value)
    return out


def decode_spans(request: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    spans = []
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                links = tuple(
                    ReceivedLink(
                        link.trace_id.hex(), link.span_id.hex(), attributes(link.attributes)
                    )
                    for link in s.links
                )
                spans.append(
                    ReceivedSpan(
                        name=s.name,
                        kind=s.kind,
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(),
                        links=links,
                        attributes=attributes(s.attributes),
                        status_code=s.status.code,
                        status_message=s.status.message,
                        resource=resource,
                        events=tuple(e.name for e in s.events),
                    )
                )
    return spans


class OtlpReceiver:
    """Collects the spans POSTed to it; a context manager that starts and stops it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # notified on every export
        self._spans: list[ReceivedSpan] = []
        self.requests: list[dict[str, str]] = []  # headers of each accepted request
        self.errors: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """The base URL, for OTEL_EXPORTER_OTLP_ENDPOINT (the exporter appends /v1/traces)."""
        assert self._server is not None, "receiver not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def wait_for_spans(self, count: int, timeout_s: float = 10.0) -> list[ReceivedSpan]:
        """The spans received, once there are at least ``count`` (AssertionError on timeout)."""
        with self._arrived:
            if self._arrived.wait_for(lambda: len(self._spans) >= count, timeout=timeout_s):
                return list(self._spans)
        raise AssertionError(f"received {len(self.spans)} spans, not {count}: {self.errors}")

    def _accept(self, headers: dict[str, str], spans: list[ReceivedSpan]) -> None:
        with self._lock:
            self.requests.append(headers)
            self._spans.extend(spans)
            self._arrived.notify_all()

    def _reject(self, reason: str) -> None:
        with self._lock:
            self.errors.append(reason)

    def __enter__(self) -> OtlpReceiver:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="otlp-receiver", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler(receiver: OtlpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the exporter's session expects

        def do_POST(self) -> None:
            if self.path != TRACES_PATH:
                return self._fail(404, f"unexpected path {self.path}")
            length = self.headers.get("Content-Length")
            if length is None:
                return self._fail(411, "no Content-Length")
            body = self.rfile.read(int(length))
            if self.headers.get_content_type() != "application/x-protobuf":
                return self._fail(415, f"content type {self.headers.get_content_type()}")
            encoding = (self.headers.get("Content-Encoding") or "identity").lower()
            try:
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding != "identity":
                    return self._fail(415, f"content encoding {encoding}")
                request = ExportTraceServiceRequest.FromString(body)
            except Exception as exc:  # bad gzip, or protobuf's DecodeError
                return self._fail(400, f"undecodable body: {exc}")
            receiver._accept(dict(self.headers.items()), decode_spans(request))
            self._reply(200, ExportTraceServiceResponse().SerializeToString())

        def _fail(self, status: int, reason: str) -> None:
            receiver._reject(reason)
            self.close_connection = True  # an unread body must not be taken for a request
            self._reply(status, reason.encode())

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: failures are kept in receiver.errors

    return Handler
