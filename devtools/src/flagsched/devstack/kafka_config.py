"""A KRaft node's files: its configuration, its formatted storage and its java command.

``server.properties`` makes one loopback node both broker and controller, tuned for
tests (one replica for internal topics, no initial rebalance delay, no topic
auto-creation); the log4j files send the broker's log to its run directory.
"""

from __future__ import annotations

import base64
import logging
import shutil
import subprocess
import uuid
from pathlib import Path

from flagsched.devstack.kafka_jars import require_tool
from flagsched.devstack.process import LOOPBACK
from flagsched.runtime.errors import DevStackError

log = logging.getLogger(__name__)


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


def write_config(
    run_dir: Path,
    properties_path: Path,
    *,
    port: int | None,
    controller: int | None,
    data_dir: Path,
    log_path: Path,
) -> None:
    """Write ``server.properties`` and the log4j files of a node listening on ``port``."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "listeners": f"PLAINTEXT://{LOOPBACK}:{port},CONTROLLER://{LOOPBACK}:{controller}",
        "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "controller.quorum.bootstrap.servers": f"{LOOPBACK}:{controller}",
        "log.dirs": str(data_dir),
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
    properties_path.write_text("# written by flagsched dev stack\n" + text)
    (run_dir / "log4j.properties").write_text(_LOG4J.format(log=log_path))
    (run_dir / "log4j2.properties").write_text(_LOG4J2)


def java_command(
    run_dir: Path, libs_dir: Path, main: str, *args: str, heap: tuple[str, ...] = ()
) -> list[str]:
    """The command line running ``main`` on the broker jars with the node's log4j files."""
    java = require_tool("java", "openjdk-17-jre-headless")
    return [
        java,
        *heap,
        f"-Dlog4j.configuration=file:{run_dir / 'log4j.properties'}",
        f"-Dlog4j2.configurationFile={run_dir / 'log4j2.properties'}",
        "-cp",
        f"{libs_dir}/*",
        main,
        *args,
    ]


def format_storage(run_dir: Path, libs_dir: Path, data_dir: Path, properties_path: Path) -> None:
    """Format ``data_dir`` for a new single-node cluster, unless it is formatted already."""
    if (data_dir / "meta.properties").is_file():
        return
    shutil.rmtree(data_dir, ignore_errors=True)
    cluster_id = random_cluster_id()
    cmd = java_command(
        run_dir,
        libs_dir,
        "kafka.tools.StorageTool",
        "format",
        "--standalone",
        "-t",
        cluster_id,
        "-c",
        str(properties_path),
    )
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise DevStackError(f"formatting Kafka storage failed: {output}")
    log.info("formatted Kafka storage in %s (cluster id %s)", data_dir, cluster_id)
