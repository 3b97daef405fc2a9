"""The ``/metrics`` HTTP endpoint: one small threaded server per registry, stoppable."""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

log = logging.getLogger(__name__)


class MetricsServer:
    """A running ``/metrics`` endpoint.

    ``port`` is the bound port (useful after asking for port 0). Calling the object, or
    :meth:`stop`, shuts it down; stopping twice is harmless. Also a context manager.
    """

    def __init__(self, httpd: WSGIServer, thread: threading.Thread, addr: str) -> None:
        self._httpd = httpd
        self._thread = thread
        self._stopped = False
        self.addr = addr
        self.port: int = httpd.server_port

    @property
    def url(self) -> str:
        """The scrape URL, e.g. ``http://127.0.0.1:9400/metrics``."""
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        """Stop serving, close the socket and join the server thread."""
        if self._stopped:
            return
        self._stopped = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        log.info("metrics endpoint on %s:%s stopped", self.addr, self.port)

    def __call__(self) -> None:
        """Same as :meth:`stop`, so the server can be used as a stop callable."""
        self.stop()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve_registry(
    registry: CollectorRegistry, port: int = 0, addr: str = "127.0.0.1"
) -> MetricsServer:
    """Serve ``registry`` on ``addr:port`` (0 picks a free port) in a daemon thread.

    Any path answers with the exposition text; ``/metrics`` is the conventional one.
    Raises OSError when the port is taken.
    """
    httpd, thread = start_http_server(port, addr=addr, registry=registry)
    server = MetricsServer(httpd, thread, addr)
    log.info("serving metrics on %s", server.url)
    return server
