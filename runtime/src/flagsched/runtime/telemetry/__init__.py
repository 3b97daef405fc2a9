"""Operational telemetry.

* :mod:`flagsched.runtime.telemetry.metrics` -- :class:`Metrics`, the Prometheus metrics of a
  worker or dispatcher, each instance on its own registry (never the global one);
* :mod:`flagsched.runtime.telemetry.backlog` -- the retry backlog read from PostgreSQL, as a
  scrape-time collector;
* :mod:`flagsched.runtime.telemetry.server` -- the ``/metrics`` HTTP endpoint.

Tracing lives in ``flagsched.runtime.telemetry.tracing``. This package module imports nothing,
so importing one submodule never drags in the others.
"""
