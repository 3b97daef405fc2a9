"""The dev stack: real Apache Kafka (KRaft) and a throwaway PostgreSQL, started by flagsched.

``resolve_endpoints(settings)`` is the entry point for code that needs the
services; ``DevStack`` is the local stack itself; ``check_kafka`` and
``check_database`` prove configured endpoints answer, naming the setting if not.
"""

from __future__ import annotations

from flagsched.devstack.endpoints import Endpoints
from flagsched.devstack.kafka import KAFKA_VERSION, LocalKafka, ensure_jars
from flagsched.devstack.postgres import LocalPostgres
from flagsched.devstack.probes import check_database, check_kafka
from flagsched.devstack.stack import DevStack, Stack, resolve_endpoints

__all__ = [
    "KAFKA_VERSION",
    "DevStack",
    "Endpoints",
    "LocalKafka",
    "LocalPostgres",
    "Stack",
    "check_database",
    "check_kafka",
    "ensure_jars",
    "resolve_endpoints",
]
