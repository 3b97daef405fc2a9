"""A real single-node Apache Kafka (KRaft, broker+controller): its process and readiness.

The jars are fetched once with ``mvn`` (devstack/kafka_jars.py); each :class:`LocalKafka`
keeps its configuration, data and logs in its own run directory (devstack/kafka_config.py
writes them), so it can be stopped, killed and started again in place with its topics
intact. This module chooses the ports, launches the JVM detached and waits until it answers.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

from flagsched.devstack.kafka_config import (
    format_storage,
    java_command,
    random_cluster_id,
    write_config,
)
from flagsched.devstack.kafka_jars import KAFKA_VERSION, SCALA_VERSION, ensure_jars, jars_dir
from flagsched.devstack.probes import wait_for_kafka
from flagsched.devstack.process import (
    LOOPBACK,
    free_port,
    kill_and_wait,
    pid_alive,
    pid_cmdline,
    port_soon_free,
    tail,
    terminate,
)
from flagsched.runtime.errors import DevStackError, ServiceUnavailable

__all__ = [
    "KAFKA_VERSION",
    "SCALA_VERSION",
    "LocalKafka",
    "ensure_jars",
    "jars_dir",
    "random_cluster_id",
]

log = logging.getLogger(__name__)

_BIND_FAILURE = "Address already in use"
# $1 is the output file, the rest the command; prints the background pid.
_DETACH = 'out="$1"; shift; "$@" </dev/null >>"$out" 2>&1 & echo $!'
_START_ATTEMPTS = 3


class LocalKafka:
    """One KRaft node (``process.roles=broker,controller``) on loopback ports.

    ``start()`` is idempotent and also restarts a stopped or killed node on the
    same ports and data directory, so topics and committed offsets survive.
    """

    def __init__(
        self,
        run_dir: Path,
        libs_dir: Path,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        start_timeout_s: float = 60.0,
    ) -> None:
        self.run_dir = run_dir
        self.libs_dir = libs_dir
        self.start_timeout_s = start_timeout_s
        self._port = port
        self._controller_port = controller_port
        self._log_offsets: dict[Path, int] = {}

    # --- where things are -----------------------------------------------------------
    @property
    def port(self) -> int | None:
        """The client (PLAINTEXT) port, once chosen."""
        return self._port

    @property
    def controller_port(self) -> int | None:
        """The KRaft controller port, once chosen."""
        return self._controller_port

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:PORT``; raises DevStackError before a port is chosen."""
        if self._port is None:
            raise DevStackError("Kafka has no port yet: start it first")
        return f"{LOOPBACK}:{self._port}"

    @property
    def properties_path(self) -> Path:
        """The broker's ``server.properties``."""
        return self.run_dir / "server.properties"

    @property
    def data_dir(self) -> Path:
        """``log.dirs``: the partitions and the KRaft metadata log."""
        return self.run_dir / "data"

    @property
    def log_path(self) -> Path:
        """The broker's own log (log4j)."""
        return self.run_dir / "broker.log"

    @property
    def stdout_path(self) -> Path:
        """The JVM's stdout and stderr."""
        return self.run_dir / "kafka.out"

    @property
    def _pid_path(self) -> Path:
        return self.run_dir / "kafka.pid"

    # --- state ----------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The pid of this node's JVM when it is running, else None."""
        try:
            pid = int(self._pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        if not pid_alive(pid):
            return None
        cmdline = pid_cmdline(pid)
        # A recycled pid belongs to some other program: not our broker.
        if cmdline is not None and str(self.properties_path) not in cmdline:
            return None
        return pid

    def is_running(self) -> bool:
        """True when this node's JVM is alive (it may still be starting)."""
        return self.pid is not None

    def client_config(self) -> dict[str, Any]:
        """kafka-python connection options for this node."""
        return {"bootstrap_servers": [self.bootstrap_servers]}

    # --- lifecycle ------------------------------------------------------------------
    def start(self) -> str:
        """Start (or adopt a running) node and wait until it answers metadata requests."""
        self.launch()
        return self.wait_ready()

    def launch(self) -> None:
        """Spawn the JVM without waiting for it; a running node is left alone."""
        if self.is_running():
            return
        self._pid_path.unlink(missing_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._choose_ports(fresh=False)
        self._write_config()
        self._format_storage()
        self._spawn()

    def wait_ready(self) -> str:
        """Wait for a metadata request to succeed; return the bootstrap servers.

        A JVM that dies because its port was taken meanwhile is started again on
        fresh ports, up to three times.
        """
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                wait_for_kafka(
                    self.client_config(), self.start_timeout_s, check_alive=self._check_alive
                )
                log.info("Kafka %s ready at %s", KAFKA_VERSION, self.bootstrap_servers)
                return self.bootstrap_servers
            except _PortTaken:
                if attempt == _START_ATTEMPTS:
                    raise DevStackError(
                        f"Kafka could not bind a port after {attempt} attempts; see {self.log_path}"
                    ) from None
                log.warning("Kafka port was taken during start; retrying on fresh ports")
                self._choose_ports(fresh=True)
                self._write_config()
                self._spawn()
            except ServiceUnavailable as exc:
                self.stop()
                raise DevStackError(
                    f"Kafka did not become ready: {exc}; see {self.log_path}\n{tail(self.log_path)}"
                ) from exc
        raise AssertionError("unreachable")

    def stop(self, timeout_s: float = 30.0) -> None:
        """Shut down cleanly (SIGTERM), falling back to SIGKILL after ``timeout_s``."""
        pid = self.pid
        if pid is not None:
            terminate(pid, timeout_s, "Kafka")
            log.info("Kafka stopped (pid %d)", pid)
        self._pid_path.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the JVM, as a crash would (for fault tests)."""
        pid = self.pid
        if pid is not None:
            kill_and_wait([pid], "Kafka")
            log.info("Kafka killed (pid %d)", pid)
        self._pid_path.unlink(missing_ok=True)

    # --- internals ------------------------------------------------------------------
    def _choose_ports(self, *, fresh: bool) -> None:
        """Keep the remembered ports unless they stay taken (or ``fresh`` is asked).

        A broker killed a moment ago may hold its ports for a few milliseconds
        more, hence the short wait before moving.
        """
        old = (self._port, self._controller_port)
        if fresh or self._port is None or not port_soon_free(self._port):
            self._port = free_port(avoid=frozenset({self._controller_port or 0}))
        if (
            fresh
            or self._controller_port is None
            or self._controller_port == self._port
            or not port_soon_free(self._controller_port)
        ):
            self._controller_port = free_port(avoid=frozenset({self._port}))
        if None not in old and old != (self._port, self._controller_port):
            log.warning("Kafka ports %s were in use; moved to %s", old, self.bootstrap_servers)

    def _write_config(self) -> None:
        write_config(
            self.run_dir,
            self.properties_path,
            port=self._port,
            controller=self._controller_port,
            data_dir=self.data_dir,
            log_path=self.log_path,
        )

    def _format_storage(self) -> None:
        format_storage(self.run_dir, self.libs_dir, self.data_dir, self.properties_path)

    def _spawn(self) -> None:
        # Remember where this run's output starts, so failures are judged on it alone.
        self._log_offsets = {
            path: path.stat().st_size if path.exists() else 0
            for path in (self.stdout_path, self.log_path)
        }
        cmd = java_command(
            self.run_dir,
            self.libs_dir,
            "kafka.Kafka",
            str(self.properties_path),
            heap=("-Xms256m", "-Xmx768m"),
        )
        # The broker outlives the process that starts it (`flagsched dev up`), so it is
        # not kept as our child: a shell starts it in the background and exits, leaving
        # it to init. Its own session keeps a terminal's Ctrl-C away from it.
        done = subprocess.run(
            ["/bin/sh", "-c", _DETACH, "sh", str(self.stdout_path), *cmd],
            cwd=self.run_dir,
            capture_output=True,
            text=True,
            start_new_session=True,
            timeout=30,
            check=False,
        )
        try:
            pid = int(done.stdout.strip())
        except ValueError:
            raise DevStackError(f"could not launch Kafka: {done.stderr.strip()}") from None
        self._pid_path.write_text(f"{pid}\n")
        log.info("Kafka launched (pid %d) on %s", pid, self.bootstrap_servers)

    def _check_alive(self) -> None:
        if self.is_running():
            return
        self._pid_path.unlink(missing_ok=True)
        if any(_BIND_FAILURE in self._output_since_spawn(path) for path in self._log_offsets):
            raise _PortTaken
        raise DevStackError(
            f"Kafka exited during start; see {self.log_path} and {self.stdout_path}\n"
            f"{tail(self.log_path)}\n{tail(self.stdout_path, 5)}"
        )

    def _output_since_spawn(self, path: Path) -> str:
        try:
            with path.open("rb") as handle:
                offset = self._log_offsets.get(path, 0)
                # A rolled-over log is smaller than the remembered offset: read it whole.
                handle.seek(offset if offset <= path.stat().st_size else 0)
                return handle.read().decode(errors="replace")
        except OSError:
            return ""


class _PortTaken(Exception):
    """The JVM died because another process bound its port first."""
