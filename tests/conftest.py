"""Shared fixtures: the real services (started by the project itself unless given) and
per-test isolation (a database and topics of its own), for tests/integration and
tests/browser alike."""

pytest_plugins = ["tests.support.services", "tests.support.isolation"]
