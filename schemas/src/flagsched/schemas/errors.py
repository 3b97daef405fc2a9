"""The contract's one exception: a record that does not follow it."""

from __future__ import annotations


class PoisonRecord(ValueError):
    """A Kafka record that cannot be understood (bad encoding, schema, headers, size)."""
