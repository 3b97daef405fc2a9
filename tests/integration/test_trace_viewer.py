"""A schedule's trace as a real Jaeger shows it.

A real dispatcher and a real worker export their spans over OTLP/HTTP, as configured
by the standard OTEL_* variables (docs/observability.md), to a Jaeger built from its
Go module (tests/support/jaeger.py). The schedule's flag row is locked by another
transaction, so two attempts fail with lock contention; then the lock is released and
the third applies. Jaeger's HTTP API must return one trace: the dispatcher's ``send``
span and three ``process`` spans, each the child of and linked to the one before, with
their attributes and error statuses.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flagsched.producer.dispatcher import Dispatcher
from flagsched.runtime.settings import Settings
from flagsched.runtime.telemetry.tracing import Tracing, setup_tracing
from tests.support.admin import running_admin
from tests.support.jaeger import Jaeger
from tests.support.pipeline import (
    Running,
    add_flag,
    add_schedule,
    attempts,
    hold_flag_lock,
    running_worker,
    status_is,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.viewers]


@pytest.fixture
def jaeger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Jaeger]:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    with Jaeger(tmp_path) as started:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", started.otlp_endpoint)
        yield started


def provider_for(settings: Settings, service: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A tracer provider as the role's process would set it up (OTEL_SERVICE_NAME)."""
    monkeypatch.setenv("OTEL_SERVICE_NAME", service)
    provider = setup_tracing(settings)
    assert provider is not None, "an OTLP endpoint is set: spans are exported"
    return provider


def hex_id(value: str, size: int) -> str:
    """An id of Jaeger's OTLP JSON: hex as the OTLP JSON mapping says (base64 accepted)."""
    if len(value) == size * 2:
        return value.lower()
    return base64.b64decode(value).hex()


def attrs(span: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for item in span.get("attributes", []):
        value = item["value"]
        out[item["key"]] = next(iter(value.values())) if value else None
    return out


def otlp_spans(document: Any) -> list[tuple[str, dict[str, Any]]]:
    """(service name, span) of every span in an /api/v3 answer."""
    out: list[tuple[str, dict[str, Any]]] = []
    for resource_spans in document["result"]["resourceSpans"]:
        service = attrs(resource_spans["resource"])["service.name"]
        for scope in resource_spans["scopeSpans"]:
            out.extend((service, span) for span in scope["spans"])
    return out


def test_jaeger_shows_one_trace_for_a_schedule_that_failed_twice(
    settings: Settings,
    db: Any,
    dsn: str,
    jaeger: Jaeger,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    dispatching = provider_for(settings, "flagsched-dispatcher", monkeypatch)
    working = provider_for(settings, "flagsched-worker", monkeypatch)
    add_flag(db, "viewed")
    sid = add_schedule(db, "viewed", {"enabled": True}, retry_policy={"base_s": 0.4})
    _, release = hold_flag_lock(dsn, "viewed")
    dispatcher = Dispatcher(settings, settings.topic_layout(), tracing=Tracing(dispatching))
    with running_worker(settings, tracing=Tracing(working)), Running(dispatcher.run, "dispatcher"):
        wait_until(lambda: len(attempts(db, sid)) >= 2, what="two failed attempts")
        release()
        wait_until(lambda: status_is(db, sid, "applied"), what="applied")
    dispatching.shutdown()  # exports what is still queued, as the CLI does on exit
    working.shutdown()
    (trace_id,) = {a["trace_id"] for a in attempts(db, sid)}

    def whole_trace() -> Any:
        found = jaeger.get_json(f"/api/v3/traces/{trace_id}")
        return found if found and len(otlp_spans(found)) >= 4 else None

    document = wait_until(whole_trace, timeout_s=30, what="the trace in Jaeger")
    spans = otlp_spans(document)
    print(f"Jaeger /api/v3/traces/{trace_id}:")
    for service, span in spans:
        print(
            json.dumps(
                {
                    "service": service,
                    **{
                        k: span.get(k)
                        for k in ("name", "kind", "spanId", "parentSpanId", "links", "status")
                    },
                    "attributes": attrs(span),
                }
            )
        )
    assert len(spans) == 4, [s["name"] for _, s in spans]
    assert {hex_id(s["traceId"], 16) for _, s in spans} == {trace_id}
    by_id = {hex_id(s["spanId"], 8): (service, s) for service, s in spans}

    (send,) = [(svc, s) for svc, s in spans if s["name"].startswith("send ")]
    assert send[0] == "flagsched-dispatcher"
    assert send[1]["name"] == f"send {settings.topic_layout().due}"
    assert not send[1].get("parentSpanId"), "the send is the root of the trace"
    assert attrs(send[1])["flagsched.schedule.id"] in (sid, str(sid))

    # Follow the chain from the root: each process span is the child of, and linked
    # to, the span before it.
    chain = []
    parent = hex_id(send[1]["spanId"], 8)
    while children := [
        s for _, s in spans if s.get("parentSpanId") and hex_id(s["parentSpanId"], 8) == parent
    ]:
        (child,) = children
        assert [hex_id(link["spanId"], 8) for link in child["links"]] == [parent]
        assert {hex_id(link["traceId"], 16) for link in child["links"]} == {trace_id}
        chain.append(child)
        parent = hex_id(child["spanId"], 8)
    assert len(chain) == 3 and all(
        by_id[hex_id(s["spanId"], 8)][0] == "flagsched-worker" for s in chain
    )
    assert all(s["name"].startswith("process ") for s in chain)
    assert chain[0]["name"] == f"process {settings.topic_layout().due}"
    assert all(
        s["name"].startswith(f"process {settings.topic_layout().prefix}.retry.") for s in chain[1:]
    )

    outcomes = [attrs(s)["flagsched.outcome"] for s in chain]
    assert outcomes == ["retry", "retry", "applied"]
    assert [int(attrs(s)["flagsched.attempt"]) for s in chain] == [1, 2, 3]
    for span in chain:
        a = attrs(span)
        assert a["messaging.system"] == "kafka"
        assert a["messaging.operation.type"] == "process"
        assert int(a["flagsched.schedule.id"]) == sid
        assert a["flagsched.flag.key"] == "viewed"
    statuses = [s.get("status", {}).get("code") for s in chain]
    assert statuses[:2] == ["STATUS_CODE_ERROR"] * 2 or statuses[:2] == [2, 2], statuses
    assert statuses[2] in ("STATUS_CODE_OK", 1), statuses
    rows = attempts(db, sid)
    assert [a["outcome"] for a in rows] == ["retry", "retry", "applied"]
    # The error class recorded in the attempt row, on the span (the held row lock).
    assert [attrs(s)["error.type"] for s in chain[:2]] == [a["error_class"] for a in rows[:2]]
    assert all(s.get("status", {}).get("message") for s in chain[:2]), "the error message"
    assert "error.type" not in attrs(chain[2])

    # The API Jaeger's own UI reads, and the UI's route for the trace.
    legacy = jaeger.get_json(f"/api/traces/{trace_id}")
    (trace,) = legacy["data"]
    assert len(trace["spans"]) == 4
    services = {p["serviceName"] for p in trace["processes"].values()}
    assert services == {"flagsched-dispatcher", "flagsched-worker"}
    status, _page = jaeger.get(f"/trace/{trace_id}")
    assert status == 200

    # The admin API's (and UI's) trace links, built from FLAGSCHED_TRACE_URL_TEMPLATE as
    # docs/observability.md says for Jaeger, name this trace in Jaeger's UI.
    template = f"{jaeger.query_url}/trace/{{trace_id}}"
    with (
        running_admin(settings, tmp_path, trace_url_template=template) as api,
        api.client("viewer") as client,
    ):
        detail = client.get(f"/api/admin/flags/viewed/schedules/{sid}").json()
    links = {a["trace_url"] for a in detail["attempts"]}
    assert links == {f"{jaeger.query_url}/trace/{trace_id}"}
    (link,) = links
    # A Jaeger built from its Go module has no UI assets (the route serves Jaeger's
    # placeholder page), so the check is the UI's route and the API its page loads.
    status, page = jaeger.get(link.removeprefix(jaeger.query_url))
    assert status == 200 and b"<html" in page.lower(), page[:200]
    # What Jaeger's UI page at that link loads: the same trace id, the four spans.
    (shown,) = jaeger.get_json("/api/traces/" + link.rsplit("/", 1)[1])["data"]
    assert shown["traceID"] == trace_id and len(shown["spans"]) == 4
