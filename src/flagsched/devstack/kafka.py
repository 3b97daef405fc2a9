"""A real single-node Apache Kafka (KRaft, broker+controller) run from Maven Central jars.

The jars are fetched once with ``mvn`` (``deploy/local/pom.xml``) into
``{dev_home}/jars/kafka-{KAFKA_VERSION}/libs``; each :class:`LocalKafka` keeps
its configuration, data and logs in its own run directory, so it can be
stopped, killed and started again in place with its topics intact.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

from flagsched.devstack.probes import wait_for_kafka
from flagsched.devstack.process import (
    LOOPBACK,
    file_lock,
    free_port,
    kill_and_wait,
    pid_alive,
    pid_cmdline,
    port_soon_free,
    tail,
    terminate,
)
from flagsched.errors import DevStackError, ServiceUnavailable

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
"""The Apache Kafka release the dev stack runs; the only place it is written down."""

SCALA_VERSION = "2.13"
_COMPLETE_MARKER = ".complete"
_POM = Path(__file__).resolve().parents[3] / "deploy" / "local" / "pom.xml"
_BIND_FAILURE = "Address already in use"
# $1 is the output file, the rest the command; prints the background pid.
_DETACH = 'out="$1"; shift; "$@" </dev/null >>"$out" 2>&1 & echo $!'
_START_ATTEMPTS = 3


def jars_dir(dev_home: Path, version: str = KAFKA_VERSION) -> Path:
    """Where the broker jars of ``version`` live under ``dev_home``."""
    return dev_home / "jars" / f"kafka-{version}" / "libs"


def _cache_complete(libs: Path) -> bool:
    marker = libs.parent / _COMPLETE_MARKER
    try:
        names = marker.read_text().split()
    except OSError:
        return False
    return bool(names) and all((libs / name).is_file() for name in names)


def _require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise DevStackError(f"{name} not found: apt-get install {package}")
    return path


def ensure_jars(dev_home: Path, version: str = KAFKA_VERSION) -> Path:
    """Return the directory of the Kafka broker jars, fetching them with Maven if needed.

    A cache counts only when a marker listing every jar is present, so an
    interrupted download is fetched again. Concurrent callers serialise on a lock.
    """
    libs = jars_dir(dev_home, version)
    if _cache_complete(libs):
        return libs
    with file_lock(libs.parent.parent / ".lock", timeout_s=900, what="the jar cache"):
        if _cache_complete(libs):
            return libs
        mvn = _require_tool("mvn", "maven")
        _require_tool("java", "openjdk-17-jre-headless")
        if not _POM.is_file():
            raise DevStackError(f"{_POM} not found: the dev stack runs from a source checkout")
        staging = libs.parent / f"libs.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        log.info("fetching Kafka %s jars with Maven into %s", version, libs)
        cmd = [
            mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(_POM),
            "dependency:copy-dependencies", "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}", f"-Dkafka.version={version}",
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        main_jar = staging / f"kafka_{SCALA_VERSION}-{version}.jar"
        if done.returncode != 0 or not main_jar.is_file():
            shutil.rmtree(staging, ignore_errors=True)
            output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise DevStackError(f"mvn could not fetch Kafka {version} jars:\n{output}")
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        names = sorted(p.name for p in libs.glob("*.jar"))
        (libs.parent / _COMPLETE_MARKER).write_text("\n".join(names) + "\n")
        log.info("cached %d Kafka jars in %s", len(names), libs)
    return libs


def random_cluster_id() -> str:
    """A KRaft cluster id: a random UUID in URL-safe base64 without padding."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # Kafka's own generator skips ids starting with '-', which CLIs read as flags.
        if not cluster_id.startswith("-"):
            return cluster_id


_LOG4J = """\
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File={log}
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
"""

# Kafka also touches the Log4j 2 API; without a configuration Log4j 2 prints an
# error on every start. Its (rare) output goes to the JVM's stdout log.
_LOG4J2 = """\
status=error
appender.out.type=Console
appender.out.name=out
appender.out.layout.type=PatternLayout
appender.out.layout.pattern=[%d] %p %m (%c)%n
rootLogger.level=warn
rootLogger.appenderRef.out.ref=out
"""


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
        port, controller = self._port, self._controller_port
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "listeners": f"PLAINTEXT://{LOOPBACK}:{port},CONTROLLER://{LOOPBACK}:{controller}",
            "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "controller.quorum.bootstrap.servers": f"{LOOPBACK}:{controller}",
            "log.dirs": str(self.data_dir),
            # A single node: every internal topic must make do with one replica.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "min.insync.replicas": "1",
            # Tests join groups constantly; the 3 s default delay would dominate them.
            "group.initial.rebalance.delay.ms": "0",
            # A worker killed mid-transaction leaves it open; abort timed-out ones every
            # second (default 10 s) so read_committed readers are not held up for long.
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
            # A SIGKILLed broker may re-register after 3 s instead of 9 s (fault tests).
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            # flagsched creates its topics explicitly; typos must fail, not create topics.
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
        }
        text = "".join(f"{key}={value}\n" for key, value in props.items())
        self.properties_path.write_text("# written by flagsched dev stack\n" + text)
        (self.run_dir / "log4j.properties").write_text(_LOG4J.format(log=self.log_path))
        (self.run_dir / "log4j2.properties").write_text(_LOG4J2)

    def _java(self, main: str, *args: str, heap: tuple[str, ...] = ()) -> list[str]:
        java = _require_tool("java", "openjdk-17-jre-headless")
        return [
            java,
            *heap,
            f"-Dlog4j.configuration=file:{self.run_dir / 'log4j.properties'}",
            f"-Dlog4j2.configurationFile={self.run_dir / 'log4j2.properties'}",
            "-cp",
            f"{self.libs_dir}/*",
            main,
            *args,
        ]

    def _format_storage(self) -> None:
        if (self.data_dir / "meta.properties").is_file():
            return
        shutil.rmtree(self.data_dir, ignore_errors=True)
        cluster_id = random_cluster_id()
        cmd = self._java(
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            cluster_id,
            "-c",
            str(self.properties_path),
        )
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip()
            raise DevStackError(f"formatting Kafka storage failed: {output}")
        log.info("formatted Kafka storage in %s (cluster id %s)", self.data_dir, cluster_id)

    def _spawn(self) -> None:
        # Remember where this run's output starts, so failures are judged on it alone.
        self._log_offsets = {
            path: path.stat().st_size if path.exists() else 0
            for path in (self.stdout_path, self.log_path)
        }
        cmd = self._java("kafka.Kafka", str(self.properties_path), heap=("-Xms256m", "-Xmx768m"))
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
