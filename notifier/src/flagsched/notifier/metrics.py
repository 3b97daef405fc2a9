"""The notifier's Prometheus metrics, on a registry of their own (as runtime.telemetry's
Metrics): messages sent, attempts failed and events dropped, by sink."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from flagsched.runtime.telemetry.server import MetricsServer, serve_registry

#: Why an event was not sent: a repeat within the dedup window, an endpoint disabled by
#: a 410, a schedule applied before its digest went out, a message given up on.
DROP_REASONS = ("suppressed", "disabled", "resolved", "gave_up", "refused")


class NotifierMetrics:
    """``flagsched_notifications_{sent,failed,dropped}_total`` by sink."""

    def __init__(self, sinks: list[str], registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.sent = Counter(
            "flagsched_notifications_sent", "Messages a sink accepted", ["sink"], registry=r
        )
        self.failed = Counter(
            "flagsched_notifications_failed",
            "Attempts that failed (retried or not), by sink",
            ["sink"],
            registry=r,
        )
        self.dropped = Counter(
            "flagsched_notifications_dropped",
            "Events not sent, by sink and reason",
            ["sink", "reason"],
            registry=r,
        )
        self.recorded = Counter(
            "flagsched_notifications_recorded",
            "Deliveries recorded (one per event and sink)",
            ["sink"],
            registry=r,
        )
        for sink in sinks:  # at zero from the start, so increase() sees the first event
            self.sent.labels(sink)
            self.failed.labels(sink)
            self.recorded.labels(sink)
            for reason in DROP_REASONS:
                self.dropped.labels(sink, reason)

    def serve(self, port: int = 0, addr: str = "127.0.0.1") -> MetricsServer:
        """Start the ``/metrics`` endpoint."""
        return serve_registry(self.registry, port, addr)
