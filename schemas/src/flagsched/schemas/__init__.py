"""The public contract: event models, header set, topic layout, SQL migrations.

Nothing in this package does I/O. Downstream systems depend on it; changes follow
the evolution rules in docs/subscribers.md (additive within a schema version).
"""

CONTRACT_VERSION = 1

#: The product version; every part's pyproject.toml carries the same (tests/unit/test_layout.py).
__version__ = "0.1.0"
