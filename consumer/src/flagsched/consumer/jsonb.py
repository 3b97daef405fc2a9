"""Reading json/jsonb columns so that no stored document can crash a batch.

PostgreSQL keeps a jsonb document nested thousands of levels deep; Python's
``json.loads`` raises ``RecursionError`` on it, and psycopg would raise it while
fetching the row, outside any savepoint, failing every schedule of the poll.
The worker's connection reads json through :func:`loads` instead: such a value
comes back as :class:`Unreadable`, and the one schedule holding it fails with
``invalid_update`` (or ``invalid_retry_policy``) like any other bad value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import set_json_loads


@dataclass(frozen=True)
class Unreadable:
    """A stored json value Python cannot load; ``reason`` says why."""

    reason: str


def loads(data: bytes | str) -> Any:
    """``json.loads``, with an :class:`Unreadable` for a document nested too deeply."""
    try:
        return json.loads(data)
    except RecursionError:
        return Unreadable(f"JSON nested too deeply to read ({len(data)} bytes)")


def install(conn: psycopg.Connection[Any]) -> None:
    """Read every json and jsonb value of ``conn`` through :func:`loads`."""
    set_json_loads(loads, conn)
