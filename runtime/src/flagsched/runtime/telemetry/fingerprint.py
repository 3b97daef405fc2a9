"""Error-message fingerprints: the message with its variable parts replaced, so failures
that differ only in a flag key, an id or a number group together."""

from __future__ import annotations

import re

MAX_CHARS = 160

_UUID = r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"
_QUOTED = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""
# 0x-prefixed, or 8+ hex digits mixing letters and digits (ids, hashes, trace ids)
_HEX = r"\b0x[0-9a-f]+\b|\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b"
# a number not inside a word: "tuple (0,1)" and "2000ms" change, "v2" and "t1" do not
_NUMBER = r"(?<![a-z_<])[-+]?\d+(?:\.\d+)?"

_RULES = [
    (re.compile(_UUID, re.IGNORECASE), "<uuid>"),
    (re.compile(_QUOTED), "<str>"),
    (re.compile(_HEX, re.IGNORECASE), "<hex>"),
    (re.compile(_NUMBER, re.IGNORECASE), "<n>"),
    (re.compile(r"\s+"), " "),
]


def fingerprint(message: str | None) -> str:
    """``message`` with ``<uuid>``, ``<str>`` (quoted values), ``<hex>`` and ``<n>``
    (numbers) in place of the variable parts; whitespace collapsed, at most
    :data:`MAX_CHARS` characters. ``"flag 'a.b' does not exist"`` becomes
    ``"flag <str> does not exist"``."""
    text = message or ""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    text = text.strip()
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 3] + "..."
