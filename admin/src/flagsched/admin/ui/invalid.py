"""How a page says what was wrong with a form: one line per invalid field."""

from __future__ import annotations

from pydantic import ValidationError


def describe(exc: Exception) -> str:
    """``exc`` (a pydantic ``ValidationError`` or a ``ValueError``) as one line of text:
    ``field: message; field: message``."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            ".".join(str(p) for p in e["loc"]) + ": " + e["msg"] if e["loc"] else e["msg"]
            for e in exc.errors()
        )
    return str(exc)
