"""The header schemas of the AsyncAPI document: every header flagsched writes, and the sets.

Each header's value is a UTF-8 string; :data:`HEADERS` gives its schema and meaning,
:data:`HEADER_SETS` which headers a record of each kind carries (and which it must).
The names come from headers.py, the error classes from error_classes.py.
"""

from __future__ import annotations

from typing import Any, Final

from flagsched.schemas import headers as h
from flagsched.schemas.error_classes import ErrorClass
from flagsched.schemas.error_message import ERROR_MESSAGE_MAX_BYTES

_NUMBER = r"^[0-9]+$"
_ERROR_CLASSES = ", ".join(f"`{c.value}`" for c in ErrorClass)

#: Every header flagsched writes: name -> schema of its (UTF-8 string) value.
HEADERS: Final[dict[str, dict[str, Any]]] = {
    h.ATTEMPT: {
        "pattern": r"^[1-9][0-9]*$",
        "description": "1-based number of the attempt this record asks for (decimal); on "
        "the dead-letter topic, the last attempt made.",
    },
    h.DUE_MS: {
        "pattern": _NUMBER,
        "description": "Absolute time the attempt is due, epoch milliseconds (decimal); "
        "workers never process a record before it. On the dead-letter topic, the due time "
        "of the last attempt.",
    },
    h.FIRST_FAILURE_MS: {
        "pattern": _NUMBER,
        "description": "When attempt 1 of the schedule failed, epoch milliseconds (decimal).",
    },
    h.ORIGIN_TOPIC: {"description": "Topic the failed attempt was consumed from."},
    h.ORIGIN_PARTITION: {"pattern": _NUMBER, "description": "Its partition (decimal)."},
    h.ORIGIN_OFFSET: {"pattern": _NUMBER, "description": "Its offset (decimal)."},
    h.ORIGIN_GROUP: {"description": "Consumer group of the worker that processed it."},
    h.ERROR_CLASS: {
        "description": f"Class of the last error; one of {_ERROR_CLASSES} "
        "(new classes may be added).",
    },
    h.ERROR_MESSAGE: {
        "description": "Last error message, UTF-8, at most "
        f"{ERROR_MESSAGE_MAX_BYTES} bytes (workers cut it at FLAGSCHED_ERROR_MESSAGE_MAX_BYTES, "
        "1024 by default; a cut message ends in `...`).",
    },
    h.DLT_REASON: {
        "enum": [r.value for r in h.DeadLetterReason],
        "description": "Why the record was dead-lettered: retries `exhausted`, a `permanent` "
        "error, or a `poison` record that could not be decoded.",
    },
    h.TRACEPARENT: {
        "description": "W3C trace context of the attempt that sent the record; optional, "
        "may be absent.",
    },
}

_ORIGIN = [h.ORIGIN_TOPIC, h.ORIGIN_PARTITION, h.ORIGIN_OFFSET, h.ORIGIN_GROUP]
_FAILURE = [h.ATTEMPT, h.DUE_MS, h.FIRST_FAILURE_MS, *_ORIGIN, h.ERROR_CLASS, h.ERROR_MESSAGE]

#: header schema id -> (description, header names, required header names)
HEADER_SETS: Final[dict[str, tuple[str, list[str], list[str]]]] = {
    "ScheduleDueHeaders": (
        "Headers of a record the dispatcher publishes.",
        [h.ATTEMPT, h.DUE_MS, h.TRACEPARENT],
        [h.ATTEMPT, h.DUE_MS],
    ),
    "RetryHeaders": (
        "Headers of a record on a retry tier: the next attempt, its due time and the "
        "failure that caused it.",
        [*_FAILURE, h.TRACEPARENT],
        _FAILURE,
    ),
    "DeadLetterHeaders": (
        "Headers of a dead-lettered record: the last attempt, where it was consumed from, "
        f"the last error and the reason. `{h.FIRST_FAILURE_MS}` is absent when no attempt "
        "was recorded (a `poison` record, or a permanent failure before the attempt was "
        f"recorded); `{h.ATTEMPT}` is 1 and `{h.DUE_MS}` 0 when the record's own headers "
        "could not be read.",
        [*_FAILURE, h.DLT_REASON, h.TRACEPARENT],
        [h.ATTEMPT, h.DUE_MS, *_ORIGIN, h.ERROR_CLASS, h.ERROR_MESSAGE, h.DLT_REASON],
    ),
    "LifecycleHeaders": (
        "Headers of a lifecycle event: the trace context of the attempt that caused it, "
        "when tracing is on, so a subscriber can continue the schedule's trace.",
        [h.TRACEPARENT],
        [],
    ),
}
