"""Shared fixtures: the real services (started by the project itself unless given)."""

pytest_plugins = ["tests.support.services"]
