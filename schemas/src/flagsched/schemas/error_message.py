"""The error message a record, an event and an attempt row carry: its one size bound.

Every error message flagsched writes (the ``flagsched-error-message`` header, the
lifecycle event's ``error_message``, the attempt row) is UTF-8 of at most
:data:`ERROR_MESSAGE_MAX_BYTES` bytes; a longer one is cut on a character boundary
and ends in ``...``. ``FLAGSCHED_ERROR_MESSAGE_MAX_BYTES`` may set a lower limit,
never a higher one, so no setting can make a model refuse a message.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, overload

from pydantic import BeforeValidator, Field

#: The contract's bound, in bytes of UTF-8.
ERROR_MESSAGE_MAX_BYTES: Final = 4096
_ELLIPSIS = "..."


@overload
def truncate_utf8(text: str, max_bytes: int) -> str: ...
@overload
def truncate_utf8(text: None, max_bytes: int) -> None: ...
def truncate_utf8(text: str | None, max_bytes: int) -> str | None:
    """Cut ``text`` to at most ``max_bytes`` of UTF-8 without splitting a character."""
    if text is None:
        return None
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    cut = max_bytes - len(_ELLIPSIS)
    return data[:cut].decode("utf-8", errors="ignore") + _ELLIPSIS


def _bounded(value: Any) -> Any:
    # Anything but a string is left for pydantic's own str validation to refuse.
    return truncate_utf8(value, ERROR_MESSAGE_MAX_BYTES) if isinstance(value, str) else value


#: A model field holding an error message: cut to the bound, never refused for its size.
#: (``maxLength`` in the JSON Schema counts characters: a message within the byte bound
#: is within it too.)
ErrorMessage = Annotated[
    str,
    BeforeValidator(_bounded),
    Field(
        max_length=ERROR_MESSAGE_MAX_BYTES,
        description=f"UTF-8, at most {ERROR_MESSAGE_MAX_BYTES} bytes; a longer message is "
        "cut and ends in `...`",
    ),
]
