"""Readiness and reachability probes: one real Kafka metadata request, one ``SELECT 1``.

Used both to wait for the local servers to come up and to check configured
endpoints at start-up (:func:`check_kafka`, :func:`check_database`), where a
failure names the setting to fix.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from flagsched.devstack.endpoints import DATABASE_ENV, KAFKA_ENV
from flagsched.devstack.process import POLL_INTERVAL_S, port_accepts
from flagsched.runtime.db.dsn import dsn_problem, redact_dsn
from flagsched.runtime.errors import ConfigError, ServiceUnavailable
from flagsched.runtime.settings import Settings

log = logging.getLogger(__name__)


def _host_port(server: str) -> tuple[str, int]:
    host, _, port = server.strip().rpartition(":")
    return host.strip("[]") or "localhost", int(port or 9092)


def _open_admin(client_config: Mapping[str, Any], timeout_s: float) -> Any:
    """A KafkaAdminClient whose IO thread is stopped again if bootstrapping fails.

    kafka-python starts its IO thread before bootstrapping inside ``__init__``
    and leaves it running when bootstrap raises; probing in a loop would leak
    one thread per attempt, so construction is split to clean up.
    """
    timeout_ms = max(100, int(timeout_s * 1000))
    config = {
        **client_config,
        "client_id": "flagsched-probe",
        "bootstrap_timeout_ms": timeout_ms,
        "request_timeout_ms": timeout_ms,
    }
    admin = KafkaAdminClient.__new__(KafkaAdminClient)
    try:
        admin.__init__(**config)
    except BaseException:
        for part in ("_metrics", "_client"):
            with contextlib.suppress(Exception):
                getattr(admin, part).close()
        with contextlib.suppress(Exception):
            admin._net.stop()
        raise
    return admin


def kafka_metadata(client_config: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
    """Send one DescribeCluster request; return its result (cluster id, brokers).

    Raises KafkaError/OSError when the cluster cannot answer within ``timeout_s``
    or reports no registered broker yet.
    """
    admin = _open_admin(client_config, timeout_s)
    try:
        info: dict[str, Any] = admin.describe_cluster()
    finally:
        admin.close()
    if not info.get("brokers"):
        raise KafkaError("the cluster answered but has no registered broker yet")
    return info


def wait_for_kafka(
    client_config: Mapping[str, Any],
    timeout_s: float,
    *,
    attempt_timeout_s: float = 5.0,
    check_alive: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Poll until a metadata request succeeds; raise ServiceUnavailable at the deadline.

    A TCP connect precedes each metadata request so that a closed port costs
    milliseconds instead of a whole client bootstrap. ``check_alive`` is called
    on every round and should raise when the server being waited for has died.
    """
    servers = [_host_port(s) for s in client_config["bootstrap_servers"]]
    deadline = time.monotonic() + timeout_s
    last_error = "no attempt made"
    while True:
        if check_alive is not None:
            check_alive()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ServiceUnavailable(
                f"Kafka at {','.join(f'{h}:{p}' for h, p in servers)} did not answer a "
                f"metadata request within {timeout_s:.0f}s: {last_error}"
            )
        if any(port_accepts(port, host, min(remaining, 1.0)) for host, port in servers):
            try:
                return kafka_metadata(client_config, min(remaining, attempt_timeout_s))
            except (KafkaError, OSError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                log.debug("kafka metadata request failed: %s", last_error)
        else:
            last_error = "connection refused"
        time.sleep(max(0.0, min(POLL_INTERVAL_S, deadline - time.monotonic())))


def check_kafka(settings: Settings) -> dict[str, Any]:
    """Prove the configured Kafka answers a metadata request within ``connect_timeout_s``.

    Raises ServiceUnavailable naming FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS, or
    ConfigError when the setting is missing.
    """
    config = settings.kafka_client_config()
    timeout_s = settings.connect_timeout_s
    try:
        return wait_for_kafka(config, timeout_s, attempt_timeout_s=timeout_s)
    except (ServiceUnavailable, KafkaError, OSError) as exc:
        raise ServiceUnavailable(
            f"cannot reach Kafka at {KAFKA_ENV}={settings.kafka_bootstrap_servers} "
            f"within {timeout_s:g}s: {exc}"
        ) from exc
    except ValueError as exc:  # an unparsable host:port
        raise ConfigError(f"{KAFKA_ENV} is malformed: {exc}") from exc


def select_one(dsn: str, timeout_s: float) -> None:
    """Connect and run ``SELECT 1``; psycopg errors propagate."""
    # libpq's connect_timeout is whole seconds, and values below 2 are raised to 2.
    with (
        psycopg.connect(dsn, connect_timeout=max(2, round(timeout_s)), autocommit=True) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT 1")
        if cur.fetchone() != (1,):
            raise psycopg.OperationalError("SELECT 1 did not return 1")


def check_database(settings: Settings) -> None:
    """Prove the configured PostgreSQL answers ``SELECT 1`` within ``connect_timeout_s``.

    Raises ServiceUnavailable naming FLAGSCHED_DATABASE_URL (password redacted),
    or ConfigError when the setting is missing or not a valid DSN.
    """
    dsn = settings.require_database_url()
    problem = dsn_problem(dsn)
    if problem is not None:
        raise ConfigError(f"{DATABASE_ENV} is not a valid DSN: {problem}")
    try:
        select_one(dsn, settings.connect_timeout_s)
    except psycopg.Error as exc:
        raise ServiceUnavailable(
            f"cannot reach PostgreSQL at {DATABASE_ENV}={redact_dsn(dsn)} "
            f"within {settings.connect_timeout_s:g}s: {str(exc).strip()}"
        ) from exc
