"""The dev stack in Docker containers via testcontainers (``FLAGSCHED_DEV_BACKEND=testcontainers``).

Kafka runs from the official ``apache/kafka`` image at :data:`KAFKA_VERSION`,
so both backends run the same broker. testcontainers' ``KafkaContainer`` is
not used because it drives the Confluent image's start scripts. The broker
must advertise the address clients use, so its container port is bound to the
same, free, host port. Containers live as long as this object; testcontainers'
reaper removes them if the process dies. testcontainers is imported lazily:
the local backend does not need it.
"""

from __future__ import annotations

import logging
from typing import Any

from flagsched.devstack.endpoints import Endpoints
from flagsched.devstack.kafka import KAFKA_VERSION, random_cluster_id
from flagsched.devstack.probes import wait_for_kafka
from flagsched.devstack.process import free_port
from flagsched.runtime.db.dsn import redact_dsn
from flagsched.runtime.errors import DevStackError, ServiceUnavailable

log = logging.getLogger(__name__)

KAFKA_IMAGE = f"apache/kafka:{KAFKA_VERSION}"
POSTGRES_IMAGE = "postgres:15"
_CONTROLLER_PORT = 9093
_DB = "flagsched"


def _kafka_env(host: str, port: int) -> dict[str, str]:
    """The apache/kafka image's ``KAFKA_*`` variables (each maps to a server property)."""
    return {
        "CLUSTER_ID": random_cluster_id(),
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": f"PLAINTEXT://0.0.0.0:{port},CONTROLLER://0.0.0.0:{_CONTROLLER_PORT}",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{host}:{port}",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": f"1@localhost:{_CONTROLLER_PORT}",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_MIN_INSYNC_REPLICAS": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_NUM_PARTITIONS": "1",
    }


class ContainerStack:
    """Kafka and PostgreSQL containers, with the same interface as the local DevStack."""

    def __init__(self, *, start_timeout_s: float = 120.0) -> None:
        self.start_timeout_s = start_timeout_s
        self._kafka: Any = None
        self._postgres: Any = None
        self._endpoints: Endpoints | None = None

    def up(self) -> Endpoints:
        """Start both containers (once) and wait for a real metadata request."""
        if self._endpoints is not None:
            return self._endpoints
        try:
            from testcontainers.community.postgres import PostgresContainer
            from testcontainers.core.container import DockerContainer
        except ImportError as exc:
            raise DevStackError(
                "FLAGSCHED_DEV_BACKEND=testcontainers needs testcontainers: "
                "pip install 'flagsched[dev]'"
            ) from exc
        try:
            port = free_port(avoid=frozenset({_CONTROLLER_PORT}))
            kafka = DockerContainer(KAFKA_IMAGE).with_bind_ports(port, port)
            host = kafka.get_docker_client().host()
            for key, value in _kafka_env(host, port).items():
                kafka.with_env(key, value)
            self._kafka = kafka.start()
            postgres = PostgresContainer(
                POSTGRES_IMAGE, username=_DB, password=_DB, dbname=_DB, driver=None
            )
            self._postgres = postgres.start()
            bootstrap = f"{host}:{port}"
            wait_for_kafka({"bootstrap_servers": [bootstrap]}, self.start_timeout_s)
            self._endpoints = Endpoints(bootstrap, self._postgres.get_connection_url())
        except (ServiceUnavailable, DevStackError):
            self.down()
            raise
        except Exception as exc:  # docker-py raises many types; all mean "no usable Docker"
            self.down()
            raise DevStackError(
                f"testcontainers could not start the dev stack ({type(exc).__name__}: {exc}); "
                "is Docker running? FLAGSCHED_DEV_BACKEND=local needs no Docker"
            ) from exc
        log.info("containers up: %s", self._endpoints)
        return self._endpoints

    def down(self) -> None:
        """Remove both containers."""
        for container in (self._kafka, self._postgres):
            if container is not None:
                try:
                    container.stop()
                except Exception as exc:  # best effort: the reaper removes it anyway
                    log.warning("could not remove container: %s", exc)
        self._kafka = self._postgres = None
        self._endpoints = None

    def endpoints(self) -> Endpoints:
        """The endpoints once ``up()`` ran in this process; containers are per process."""
        if self._endpoints is None:
            raise DevStackError(
                "testcontainers services exist only inside the process that started them"
            )
        return self._endpoints

    def env_lines(self) -> list[str]:
        """``export`` lines for the running containers."""
        return self.endpoints().export_lines()

    def status(self) -> dict[str, Any]:
        """Whether the containers run, with their endpoints."""
        ep = self._endpoints
        return {
            "up": ep is not None,
            "backend": "testcontainers",
            "kafka": {"image": KAFKA_IMAGE, "bootstrap_servers": ep and ep.kafka_bootstrap_servers},
            "postgres": {
                "image": POSTGRES_IMAGE,
                "database_url": ep and redact_dsn(ep.database_url),
            },
        }
