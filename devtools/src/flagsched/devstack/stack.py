"""The dev stack: one local Kafka and one local PostgreSQL sharing a run directory.

State (ports, pids) is kept in ``state.json`` so that ``flagsched dev up`` is
idempotent across processes and a second ``up`` after ``down`` reuses the same
ports. Servers killed without ``down`` are detected by pid and started again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
from pathlib import Path
from typing import Any, Protocol

from flagsched.devstack.endpoints import DATABASE_ENV, KAFKA_ENV, Endpoints
from flagsched.devstack.kafka import KAFKA_VERSION, LocalKafka, ensure_jars, jars_dir
from flagsched.devstack.postgres import LocalPostgres
from flagsched.devstack.process import file_lock
from flagsched.runtime.db.dsn import redact_dsn
from flagsched.runtime.errors import ConfigError, DevStackError
from flagsched.runtime.settings import Settings

log = logging.getLogger(__name__)

_LOCK_TIMEOUT_S = 180.0


class Stack(Protocol):
    """What :func:`resolve_endpoints` hands back: something that can be brought up and down."""

    def up(self) -> Endpoints:
        """Start the services (idempotent) and return where they are."""

    def down(self) -> None:
        """Stop the services."""

    def endpoints(self) -> Endpoints:
        """Where the running services are; DevStackError when they are not up."""

    def status(self) -> dict[str, Any]:
        """A JSON-ready description of the services."""

    def env_lines(self) -> list[str]:
        """``export FLAGSCHED_...=...`` lines; DevStackError when not up."""


class DevStack:
    """Local Kafka + PostgreSQL under ``run_dir``, with broker jars cached under ``dev_home``.

    ``kafka`` and ``postgres`` are exposed so fault tests can stop, kill and
    restart either server in place.
    """

    def __init__(self, run_dir: Path, dev_home: Path, *, start_timeout_s: float = 60.0) -> None:
        self.run_dir = run_dir
        self.dev_home = dev_home
        state = self._load_state()
        kafka_state = state.get("kafka", {})
        self.kafka = LocalKafka(
            run_dir / "kafka",
            jars_dir(dev_home),
            port=kafka_state.get("port"),
            controller_port=kafka_state.get("controller_port"),
            start_timeout_s=start_timeout_s,
        )
        self.postgres = LocalPostgres(
            run_dir / "postgres",
            port=state.get("postgres", {}).get("port"),
            start_timeout_s=start_timeout_s,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> DevStack:
        """The stack in ``{dev_home}/run`` with the shared jar cache."""
        return cls(settings.dev_home / "run", settings.dev_home)

    @property
    def state_path(self) -> Path:
        """``state.json``: ports and pids of the last ``up``."""
        return self.run_dir / "state.json"

    # --- lifecycle ------------------------------------------------------------------
    def up(self) -> Endpoints:
        """Start whatever is not running and return the endpoints.

        Fast when already up (two health checks); servers left behind by a
        killed run are cleaned up and started again. On failure, the servers
        this call started are stopped again.
        """
        with self._lock():
            launched: list[LocalKafka | LocalPostgres] = []
            try:
                if not self.kafka.is_running():
                    self.kafka.libs_dir = ensure_jars(self.dev_home)
                    self.kafka.launch()  # the JVM boots while PostgreSQL starts
                    launched.append(self.kafka)
                if not self.postgres.is_running():
                    launched.append(self.postgres)
                self.postgres.start()
                self.kafka.wait_ready()
            except BaseException:
                for server in launched:
                    with contextlib.suppress(Exception):
                        server.stop()
                self._save_state()
                raise
            self._save_state()
            return self.endpoints()

    def down(self) -> None:
        """Stop both servers (data is kept for the next ``up``)."""
        with self._lock():
            try:
                self.kafka.stop()
            finally:
                self.postgres.stop()
                self._save_state()

    # --- inspection -----------------------------------------------------------------
    def is_up(self) -> bool:
        """True when both servers' processes are alive."""
        return self.kafka.is_running() and self.postgres.is_running()

    def endpoints(self) -> Endpoints:
        """The endpoints of the running stack; DevStackError when it is not up."""
        if not self.is_up():
            raise DevStackError(
                f"the dev stack in {self.run_dir} is not up: run `flagsched dev up`"
            )
        return Endpoints(self.kafka.bootstrap_servers, self.postgres.dsn)

    def env_lines(self) -> list[str]:
        """``export FLAGSCHED_...=...`` lines for a shell; DevStackError when not up."""
        return self.endpoints().export_lines()

    def status(self) -> dict[str, Any]:
        """Whether each server runs, with its pid, address and log file."""
        kafka_pid, pg_pid = self.kafka.pid, self.postgres.pid
        return {
            "up": kafka_pid is not None and pg_pid is not None,
            "run_dir": str(self.run_dir),
            "kafka": {
                "running": kafka_pid is not None,
                "pid": kafka_pid,
                "version": KAFKA_VERSION,
                "bootstrap_servers": self.kafka.bootstrap_servers if self.kafka.port else None,
                "controller_port": self.kafka.controller_port,
                "log": str(self.kafka.log_path),
            },
            "postgres": {
                "running": pg_pid is not None,
                "pid": pg_pid,
                "database_url": redact_dsn(self.postgres.dsn) if self.postgres.port else None,
                "log": str(self.postgres.log_path),
            },
        }

    # --- state ----------------------------------------------------------------------
    def _lock(self) -> contextlib.AbstractContextManager[None]:
        return file_lock(
            self.run_dir / "devstack.lock", _LOCK_TIMEOUT_S, f"dev stack {self.run_dir}"
        )

    def _load_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self.state_path, exc)
            return {}
        return state if isinstance(state, dict) else {}

    def _save_state(self) -> None:
        state = {
            "kafka_version": KAFKA_VERSION,
            "updated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "kafka": {
                "port": self.kafka.port,
                "controller_port": self.kafka.controller_port,
                "pid": self.kafka.pid,
            },
            "postgres": {"port": self.postgres.port, "pid": self.postgres.pid},
        }
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_path)


def resolve_endpoints(settings: Settings, start: bool = True) -> tuple[Endpoints, Stack | None]:
    """Where Kafka and PostgreSQL are, starting a stack when none is configured.

    Both ``FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS`` and ``FLAGSCHED_DATABASE_URL`` set:
    those, and nothing is started (the stack is None). Neither set: the local
    dev stack in ``{dev_home}/run`` (or containers when ``dev_backend`` is
    ``testcontainers``), brought up when ``start`` is true, else required to be up.
    Only one set is a ConfigError.
    """
    kafka = settings.kafka_bootstrap_servers
    database = settings.database_url.get_secret_value() if settings.database_url else None
    if kafka and database:
        return Endpoints(kafka, database), None
    if kafka or database:
        missing = DATABASE_ENV if kafka else KAFKA_ENV
        given = KAFKA_ENV if kafka else DATABASE_ENV
        raise ConfigError(
            f"{given} is set but {missing} is not: set both to use existing services, "
            "or neither to use the local dev stack"
        )
    stack: Stack
    if settings.dev_backend == "testcontainers":
        # Imported here: the container backend pulls in testcontainers and docker.
        from flagsched.devstack.containers import ContainerStack

        stack = ContainerStack()
    else:
        stack = DevStack.from_settings(settings)
    return (stack.up() if start else stack.endpoints()), stack
