"""A bad configuration fails fast with a message naming the setting."""

from __future__ import annotations

import pytest

from flagsched.runtime.errors import ConfigError
from flagsched.runtime.settings import load_settings


@pytest.mark.parametrize(
    ("env", "value", "name"),
    [
        ("FLAGSCHED_RETRY_TIERS_S", "[5, 1]", "FLAGSCHED_RETRY_TIERS_S"),
        ("FLAGSCHED_MAX_RETRIES", "-1", "FLAGSCHED_MAX_RETRIES"),
        ("FLAGSCHED_BACKOFF_CAP_S", "nope", "FLAGSCHED_BACKOFF_CAP_S"),
        ("FLAGSCHED_JITTER", "wild", "FLAGSCHED_JITTER"),
        ("FLAGSCHED_TOPIC_PREFIX", "bad prefix!", "FLAGSCHED_TOPIC_PREFIX"),
        # A Kafka group instance id allows letters, digits, '.', '_' and '-' only.
        ("FLAGSCHED_WORKER_ID", "pod name/with slash", "FLAGSCHED_WORKER_ID"),
        ("FLAGSCHED_PARTITION_ASSIGNMENT", "sticky", "FLAGSCHED_PARTITION_ASSIGNMENT"),
        # Three heartbeats must fit in a session: 2500 * 3 > the default 6000.
        ("FLAGSCHED_HEARTBEAT_INTERVAL_MS", "2500", "FLAGSCHED_HEARTBEAT_INTERVAL_MS"),
        ("FLAGSCHED_MAX_POLL_INTERVAL_MS", "5000", "FLAGSCHED_MAX_POLL_INTERVAL_MS"),
        ("FLAGSCHED_KAFKA_RECONNECT_BACKOFF_MAX_MS", "10", "RECONNECT_BACKOFF_MAX_MS"),
        # A flag's due and retry records must share a partition number (one worker).
        ("FLAGSCHED_TIER_PARTITIONS", "2", "FLAGSCHED_TIER_PARTITIONS"),
    ],
)
def test_bad_setting_names_itself(monkeypatch, env, value, name):
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_missing_services_name_their_settings(monkeypatch):
    monkeypatch.delenv("FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("FLAGSCHED_DATABASE_URL", raising=False)
    settings = load_settings()
    with pytest.raises(ConfigError, match="FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS"):
        settings.kafka_client_config()
    with pytest.raises(ConfigError, match="FLAGSCHED_DATABASE_URL"):
        settings.require_database_url()


def test_every_kafka_client_retries_a_lost_broker_at_least_once_a_second(monkeypatch):
    """kafka-python's own ceiling (30 s) kept clients away for up to 12 s after a broker
    outage had ended; every client is built from this config (runtime/clients.py)."""
    monkeypatch.setenv("FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    assert load_settings().kafka_client_config()["reconnect_backoff_max_ms"] == 1000
    monkeypatch.setenv("FLAGSCHED_KAFKA_RECONNECT_BACKOFF_MAX_MS", "250")
    assert load_settings().kafka_client_config()["reconnect_backoff_max_ms"] == 250
