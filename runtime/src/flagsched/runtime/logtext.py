"""Text taken from records or rows, made safe to put in a log line.

A value a client wrote (a record key, a control event's worker id, a flag key
that slipped past the database's CHECK) can hold CR/LF, which forges log lines,
or ANSI escape sequences, which rewrite an operator's terminal. :func:`printable`
escapes every non-printable character and bounds the length; log such values
through it.
"""

from __future__ import annotations

#: Longest value put in a log line, in characters (before escaping).
MAX_LOGGED_CHARS = 200


def printable(value: object, limit: int = MAX_LOGGED_CHARS) -> str:
    """``value`` as one printable line of at most ``limit`` characters (plus escapes).

    Control characters (C0, DEL, C1, and Unicode line and paragraph separators) are
    written as ``\\xNN`` / ``\\uNNNN``; a longer value is cut, ending in ``...``.
    """
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
