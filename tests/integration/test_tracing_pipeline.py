"""Traces on the real pipeline: a schedule's attempts, hops included, form one chain."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flagsched.producer.dispatcher import Dispatcher
from flagsched.runtime.telemetry.tracing import Tracing
from tests.support.pipeline import (
    Running,
    add_flag,
    add_schedule,
    attempts,
    hold_flag_lock,
    read_topic,
    running_worker,
    status_is,
    wait_until,
)

pytestmark = pytest.mark.integration


def outcome(span: ReadableSpan) -> Any:
    return (span.attributes or {}).get("flagsched.outcome")


@pytest.mark.parametrize(("failures", "base_s"), [(2, 0.4), (1, 3.85)])  # 3.85 s: hops 2, 1, 0.5
def test_a_schedules_spans_are_one_chained_trace(
    settings: Any, db: Any, dsn: str, failures: int, base_s: float
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider)
    add_flag(db, "traced")
    sid = add_schedule(db, "traced", {"enabled": True}, retry_policy={"base_s": base_s})
    _, release = hold_flag_lock(dsn, "traced")
    dispatcher = Dispatcher(settings, settings.topic_layout(), tracing=tracing)
    with running_worker(settings, tracing=tracing), Running(dispatcher.run, "dispatcher"):
        wait_until(lambda: len(attempts(db, sid)) >= failures, what="failed attempts")
        release()
        wait_until(lambda: status_is(db, sid, "applied"), what="applied")
    provider.shutdown()

    spans = [
        s
        for s in exporter.get_finished_spans()
        if (s.attributes or {}).get("flagsched.schedule.id") == sid
    ]
    assert len({s.context.trace_id for s in spans if s.context}) == 1
    by_id = {s.context.span_id: s for s in spans if s.context}
    assert [s.name.split()[0] for s in spans if s.parent is None] == ["send"]
    for s in spans:
        if s.parent is not None:
            assert s.parent.span_id in by_id
            assert [link.context.span_id for link in s.links] == [s.parent.span_id]

    def ancestors(span: ReadableSpan) -> list[int]:
        out = []
        while span.parent is not None:
            span = by_id[span.parent.span_id]
            out.append(span.context.span_id if span.context else 0)
        return out

    tried = [s for s in spans if outcome(s) in ("retry", "applied")]
    assert [outcome(s) for s in tried] == ["retry"] * failures + ["applied"]
    for previous, following in itertools.pairwise(tried):
        assert previous.context is not None
        assert previous.context.span_id in ancestors(following)
    layout = settings.topic_layout()
    lifecycle = read_topic(settings, layout.lifecycle, expect=failures + 1)
    assert all(dict(r.headers).get("traceparent") for r in lifecycle)
    # one id finds the whole history: every attempt row carries the trace id
    trace_ids = {a["trace_id"] for a in attempts(db, sid)}
    assert trace_ids == {format(spans[0].context.trace_id, "032x")}
