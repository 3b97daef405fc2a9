"""Resuming a paused partition with kafka-python 3.0, working around a stall.

kafka-python parks data it fetched for a partition that was paused meanwhile
(KAFKA-7548) and restores it when the partition is resumed — but only while its
"next records" slot is ``None``. An exhausted batch in that slot is falsy, not
``None``, so the parked data is never restored; and a partition with parked data
is never fetched again. A tier partition held for its due time (seek back, pause,
resume) then stops for good. Seen with kafka-python 3.0.12; the benchmark's
pre-dispatch burst and ``tests/integration/test_predispatch.py`` reproduce it.

flagsched always seeks a held partition back to the record it holds, so parked
data is never needed: :func:`resume` drops it and the partition is fetched again
from its position. This is the one place that touches the client's internals.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

_PARKED = ("_paused_partition_records", "_paused_completed_fetches")


def resume(consumer: Any, partitions: Iterable[Any]) -> None:
    """Resume ``partitions`` and drop any data the client parked for them."""
    parts = list(partitions)
    if not parts:
        return
    consumer.resume(*parts)
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is None:
        return
    for attr in _PARKED:
        parked = getattr(fetcher, attr, None)
        if isinstance(parked, dict):
            for tp in parts:
                parked.pop(tp, None)
    current = getattr(fetcher, "_next_partition_records", None)
    if current is not None and not current:  # exhausted, but blocking the restore path
        fetcher._next_partition_records = None
