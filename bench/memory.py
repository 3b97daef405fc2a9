"""7. Memory: peak RSS (``VmHWM`` in /proc/<pid>/status) of the worker processes.

Read from the worker of the 1-worker throughput backlog (and of the 2-worker one
when that ran too), just before the worker is stopped.
"""

from __future__ import annotations

from bench import shared
from bench.suite import Context, Result

NAME = "memory"


def run(ctx: Context) -> Result:
    res = Result(NAME)
    one = shared.drain(ctx, 1)
    for label, kb in one.peak_rss_kb.items():
        res.row(f"peak RSS, {label} of the 1-worker backlog", _mib(kb), "MiB")
    two = ctx.memo.get(("drain", 2, ctx.sizes.drain_n))
    if two is not None:
        for label, kb in two.peak_rss_kb.items():
            res.row(f"peak RSS, {label} of the 2-worker backlog", _mib(kb), "MiB")
    res.notes.append(f"backlog of {one.expected} schedules; VmHWM read just before SIGTERM.")
    return res


def _mib(kb: int | None) -> float | None:
    return None if kb is None else kb / 1024
