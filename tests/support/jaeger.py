"""A real Jaeger (v2, in-memory storage) on loopback ports of its own, for the tests.

The binary is built once into the dev cache (flagsched.devstack.go_tools, ``make
setup``). Every listener is named in a config file of ours on a free 127.0.0.1 port:
Jaeger's default configuration listens on fixed ports, some on every interface.
"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.error
import urllib.request
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any

from flagsched.devstack.go_tools import JAEGER, tool_path
from tests.support.pipeline import wait_until
from tests.support.required import unavailable

CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query_http}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:{health}
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp_http}
processors:
  batch:
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Jaeger(AbstractContextManager["Jaeger"]):
    """Jaeger running as a child process; ``otlp_endpoint`` takes OTLP over HTTP."""

    def __init__(self, workdir: Path) -> None:
        binary = tool_path(JAEGER)
        if not binary.is_file():
            unavailable(f"jaeger {JAEGER.version} is not built: run `make setup` ({binary})")
        self.ports = {
            name: _free_port() for name in ("query_http", "query_grpc", "health", "otlp_http")
        }
        self.config = workdir / "jaeger.yaml"
        self.config.write_text(CONFIG.format(**self.ports))
        self.log = workdir / "jaeger.log"
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def otlp_endpoint(self) -> str:
        """The base URL for OTEL_EXPORTER_OTLP_ENDPOINT (``/v1/traces`` is appended)."""
        return f"http://127.0.0.1:{self.ports['otlp_http']}"

    @property
    def query_url(self) -> str:
        """Jaeger's HTTP API and UI."""
        return f"http://127.0.0.1:{self.ports['query_http']}"

    def __enter__(self) -> Jaeger:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(self.binary), f"--config={self.config}"], stdout=log, stderr=log
            )
        wait_until(self._healthy, timeout_s=60, what=f"Jaeger healthy (log: {self.log})")
        return self

    def _healthy(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, f"Jaeger exited: {self.log.read_text()[-2000:]}"
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.ports['health']}/status", timeout=2
            ) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError):
            return False

    def get(self, path: str) -> tuple[int, bytes]:
        """GET ``path`` of the query service: (status, body); 404s are returned too."""
        try:
            with urllib.request.urlopen(self.query_url + path, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def get_json(self, path: str) -> Any:
        status, body = self.get(path)
        return json.loads(body) if status == 200 else None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
