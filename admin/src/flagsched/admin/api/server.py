"""``flagsched admin serve``: the app on uvicorn, with the outbox drainer, the
redrive runner and the bulk-action runner beside it in the same process."""

from __future__ import annotations

import logging
import socket
import threading

import uvicorn

from flagsched.admin.api.app import create_app
from flagsched.admin.service.bulk import BulkRunner
from flagsched.admin.service.core import AdminService
from flagsched.admin.service.env import Env
from flagsched.admin.service.outbox import OutboxDrainer
from flagsched.admin.service.redrives import RedriveRunner
from flagsched.admin.settings import AdminSettings
from flagsched.runtime.clients import make_producer
from flagsched.runtime.db.connect import DictConnection, connect
from flagsched.runtime.settings import Settings

log = logging.getLogger(__name__)


class AdminServer:
    """The API server and its background threads; ``start`` then ``stop``, or ``run``."""

    def __init__(self, settings: Settings, admin: AdminSettings) -> None:
        dsn = settings.require_database_url()
        self.settings, self.admin = settings, admin
        self.pool = AdminService.make_pool(
            dsn, max_size=admin.admin_pool_max, timeout_s=settings.connect_timeout_s
        )
        env = Env(settings, admin)

        def fresh() -> DictConnection:
            return connect(dsn, timeout_s=settings.connect_timeout_s, autocommit=True)

        self.drainer = OutboxDrainer(
            fresh, lambda: make_producer(settings), poll_s=admin.admin_outbox_poll_s
        )
        self.runner = RedriveRunner(fresh, env, self.drainer.nudge)
        self.bulk = BulkRunner(fresh, env, self.drainer.nudge)
        self.service = AdminService(
            env,
            self.pool,
            on_outbox=self.drainer.nudge,
            on_redrive=self.runner.nudge,
            on_bulk=self.bulk.nudge,
        )
        self.app = create_app(self.service, admin, kafka_ready=self._kafka_ready)
        config = uvicorn.Config(
            self.app,
            host=admin.admin_addr,
            port=admin.admin_port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def _kafka_ready(self) -> bool:
        """A bootstrap server accepts a connection and the drainer has its producer."""
        if self.drainer.producer is None:
            return False
        for server in (self.settings.kafka_bootstrap_servers or "").split(","):
            host, _, port = server.strip().rpartition(":")
            try:
                with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                    return True
            except (OSError, ValueError):
                continue
        return False

    @property
    def url(self) -> str:
        """The base URL, once started."""
        servers = getattr(self.server, "servers", None) or []
        port = self.admin.admin_port
        for srv in servers:
            for sock in srv.sockets:
                port = sock.getsockname()[1]
        return f"http://{self.admin.admin_addr}:{port}"

    def _open(self) -> None:
        self.pool.open(wait=True, timeout=self.settings.connect_timeout_s)
        self.drainer.start()
        self.runner.start()
        self.bulk.start()

    def _close(self) -> None:
        self.bulk.stop()
        self.runner.stop()
        self.drainer.stop()
        self.pool.close()

    def start(self) -> None:
        """Serve in a background thread; returns once the socket listens."""
        self._open()
        self._thread = threading.Thread(target=self.server.run, name="admin-api", daemon=True)
        self._thread.start()
        deadline = threading.Event()
        for _ in range(200):
            if self.server.started:
                break
            deadline.wait(0.05)
        if not self.server.started:
            raise RuntimeError("the admin API did not start listening")
        log.info("admin API on %s", self.url)

    def stop(self) -> None:
        """Stop serving and the background threads."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._close()

    def run(self) -> None:
        """Serve in this thread until SIGINT/SIGTERM (uvicorn handles the signals)."""
        self._open()
        try:
            self.server.run()
        finally:
            self._close()
