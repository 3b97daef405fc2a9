"""The dev stack starts real servers, stops them, survives being killed, and bad settings
fail fast with a message naming the setting."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from kafka import KafkaAdminClient

from flagsched.cli import main as flagsched_main
from flagsched.devstack import (
    DevStack,
    Endpoints,
    check_database,
    check_kafka,
    resolve_endpoints,
)
from flagsched.devstack.kafka import ensure_jars, jars_dir
from flagsched.devstack.process import port_accepts
from flagsched.runtime.errors import ConfigError, DevStackError, ServiceUnavailable
from flagsched.runtime.settings import load_settings

pytestmark = pytest.mark.integration

BOUND_S = 15.0


@pytest.fixture
def dev_home() -> Path:
    return load_settings().dev_home


@pytest.fixture
def fresh_stack(tmp_path: Path, dev_home: Path) -> Iterator[DevStack]:
    stack = DevStack(tmp_path / "run", dev_home)
    yield stack
    stack.down()


def prove_alive(endpoints: Endpoints) -> None:
    """A real metadata request and a real SELECT 1."""
    settings = load_settings(
        kafka_bootstrap_servers=endpoints.kafka_bootstrap_servers,
        database_url=endpoints.database_url,
        connect_timeout_s=10,
    )
    assert check_kafka(settings)["brokers"]
    check_database(settings)


def create_topic(endpoints: Endpoints, name: str) -> None:
    with contextlib.closing(admin(endpoints)) as client:
        client.create_topics({name: {"num_partitions": 1}}, wait_for_metadata=True)


def topics(endpoints: Endpoints) -> list[str]:
    with contextlib.closing(admin(endpoints)) as client:
        return list(client.list_topics())


def admin(endpoints: Endpoints) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=endpoints.kafka_bootstrap_servers.split(","))


def ports_of(stack: DevStack) -> list[int]:
    ports = [stack.kafka.port, stack.kafka.controller_port, stack.postgres.port]
    assert all(ports)
    return [p for p in ports if p]


def test_up_down_twice_in_a_fresh_run_dir(fresh_stack, record_property):
    timings = []
    first: Endpoints | None = None
    for round_no in (1, 2):
        started = time.monotonic()
        endpoints = fresh_stack.up()
        timings.append(time.monotonic() - started)
        prove_alive(endpoints)
        assert fresh_stack.status()["up"] is True
        if first is None:
            first = endpoints
            with psycopg.connect(endpoints.database_url, autocommit=True) as conn:
                conn.execute("CREATE TABLE survives (x int)")
            create_topic(endpoints, "survives")
        else:
            # Same ports, same data: exported endpoints stay valid across down/up.
            assert endpoints == first
            with psycopg.connect(endpoints.database_url) as conn:
                conn.execute("SELECT * FROM survives")
            assert "survives" in topics(endpoints)

        again = time.monotonic()
        assert fresh_stack.up() == endpoints
        assert time.monotonic() - again < 5.0, "up on a running stack must be fast"

        ports = ports_of(fresh_stack)
        fresh_stack.down()
        assert not any(port_accepts(p) for p in ports), f"ports still open after down: {ports}"
        assert fresh_stack.status()["up"] is False
        record_property(f"up_{round_no}_s", round(timings[-1], 2))
    assert timings[1] < 30.0


def test_up_after_servers_were_sigkilled(tmp_path, dev_home):
    run_dir = tmp_path / "run"
    endpoints = DevStack(run_dir, dev_home).up()
    create_topic(endpoints, "survives-a-crash")
    status = json.loads((run_dir / "state.json").read_text())
    kafka_pid, pg_pid = status["kafka"]["pid"], status["postgres"]["pid"]
    os.kill(kafka_pid, signal.SIGKILL)
    os.kill(pg_pid, signal.SIGKILL)  # the postmaster only: backends are orphaned

    # A new process (as with `flagsched dev up`) finds stale pids and lock files.
    stack = DevStack(run_dir, dev_home)
    try:
        assert stack.status()["up"] is False
        assert stack.up() == endpoints
        prove_alive(endpoints)
        assert "survives-a-crash" in topics(endpoints)
        assert stack.kafka.pid != kafka_pid
        assert stack.postgres.pid != pg_pid
    finally:
        stack.down()


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


@pytest.mark.parametrize("silent", [False, True], ids=["refused", "silent"])
def test_unreachable_kafka_fails_in_bounded_time_naming_the_setting(silent):
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(silent_server()) if silent else 1
        settings = load_settings(kafka_bootstrap_servers=f"127.0.0.1:{port}", connect_timeout_s=3)
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable, match="FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS"):
            check_kafka(settings)
    assert time.monotonic() - started < BOUND_S


@pytest.mark.parametrize("silent", [False, True], ids=["refused", "silent"])
def test_unreachable_database_fails_in_bounded_time_naming_the_setting(silent):
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(silent_server()) if silent else 1
        dsn = f"postgresql://flagsched:s3cret@127.0.0.1:{port}/flagsched"
        settings = load_settings(database_url=dsn, connect_timeout_s=3)
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable, match="FLAGSCHED_DATABASE_URL") as caught:
            check_database(settings)
    assert time.monotonic() - started < BOUND_S
    assert "s3cret" not in str(caught.value)


def test_malformed_dsn_is_a_config_error_naming_the_setting():
    # Refused when the settings load, before anything tries to connect.
    with pytest.raises(ConfigError, match="FLAGSCHED_DATABASE_URL"):
        load_settings(database_url="this is not a dsn")


def test_wrong_database_on_a_live_server_names_the_setting(services):
    base = services.database_url.rsplit("/", 1)[0]
    settings = load_settings(database_url=f"{base}/no_such_database", connect_timeout_s=3)
    with pytest.raises(ServiceUnavailable, match=r"FLAGSCHED_DATABASE_URL.*no_such_database"):
        check_database(settings)


def test_configured_endpoints_start_nothing():
    settings = load_settings(
        kafka_bootstrap_servers="kafka.example:9092", database_url="postgresql://db.example/x"
    )
    endpoints, stack = resolve_endpoints(settings)
    assert stack is None
    assert endpoints == Endpoints("kafka.example:9092", "postgresql://db.example/x")


def test_half_configured_endpoints_are_a_config_error():
    settings = load_settings(kafka_bootstrap_servers="kafka.example:9092", database_url=None)
    with pytest.raises(ConfigError, match="FLAGSCHED_DATABASE_URL"):
        resolve_endpoints(settings)


@pytest.mark.parametrize(
    ("present", "message"),
    [
        ((), "mvn not found: apt-get install maven"),
        (("mvn",), "java not found: apt-get install openjdk-17-jre-headless"),
    ],
)
def test_missing_build_tools_are_named_with_what_to_install(
    tmp_path, monkeypatch, present, message
):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in present:
        (bin_dir / tool).symlink_to(f"/usr/bin/{tool}")
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(DevStackError, match=message):
        ensure_jars(tmp_path / "home")


def test_cli_up_env_status_down(tmp_path, dev_home, monkeypatch, capsys):
    home = tmp_path / "home"
    # Share the jar cache: this test is about the commands, not the download.
    jars_dir(home).parent.parent.parent.mkdir(parents=True)
    jars_dir(home).parent.parent.symlink_to(jars_dir(dev_home).parent.parent)
    monkeypatch.setenv("FLAGSCHED_DEV_HOME", str(home))
    for name in ("FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS", "FLAGSCHED_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)

    assert flagsched_main(["dev", "env"]) == 1
    capsys.readouterr()
    try:
        assert flagsched_main(["dev", "up"]) == 0
        up = capsys.readouterr()
        assert "dev stack up in" in up.err
        lines = up.out.splitlines()
        assert lines[0].startswith("export FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:")
        assert lines[1].startswith("export FLAGSCHED_DATABASE_URL=postgresql://")

        assert flagsched_main(["dev", "env"]) == 0
        assert capsys.readouterr().out.splitlines() == lines

        assert flagsched_main(["dev", "status"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["up"] is True
        assert status["kafka"]["version"] == "4.1.1"
    finally:
        assert flagsched_main(["dev", "down"]) == 0
    assert flagsched_main(["dev", "status"]) == 0
    assert json.loads(capsys.readouterr().out)["up"] is False
