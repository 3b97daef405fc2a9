"""Opaque cursors for keyset pagination: the sort key of the last item, base64url JSON."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from flagsched.admin.service.errors import InvalidInput


def encode_cursor(key: list[Any]) -> str:
    """A cursor that continues after the item whose sort key is ``key``."""
    raw = json.dumps(key, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, field: str) -> list[Any]:
    """The sort key in ``cursor``; :class:`InvalidInput` naming ``field`` if malformed."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(field, "not a cursor returned by this API") from exc
    if not isinstance(key, list) or not key:
        raise InvalidInput(field, "not a cursor returned by this API")
    return key
