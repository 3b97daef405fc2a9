"""Summarising a py-spy profile of a worker (collapsed stacks, ``--format raw``).

py-spy samples the worker from outside at 100 Hz, wall clock, idle frames
included, so waiting on PostgreSQL or Kafka shows up where the worker waits.
Only the main thread (the poll loop) is summarised: kafka-python's network
threads sit in ``select`` nearly all the time.

The most useful table is "call sites": each sample is charged to the innermost
line of flagsched's own code on its stack, i.e. the statement that the time was
spent under (a query, a poll, a flush).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import flagsched

_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_IDLE = ("select (selectors.py", ".wait (threading.py", "poll (selectors.py")


def _own_files() -> set[str]:
    """flagsched's module paths as py-spy may print them (basename or package-relative)."""
    own = set()
    for portion in flagsched.__path__:  # a namespace package: one portion per part
        root = Path(portion)
        for path in root.rglob("*.py"):
            own.add(path.name)
            own.add(str(path.relative_to(root.parent)))
    return own - {"__init__.py", "__main__.py"}


def _parse(raw: str) -> tuple[str, str, str]:
    m = _FRAME.match(raw.strip())
    if not m:
        return raw.strip(), "", ""
    return m["func"], m["file"], m["line"] or ""


def _package(file: str) -> str:
    if "/" in file:
        head = file.split("/", 1)[0]
        return "stdlib" if head.startswith("<") else head
    return file.removesuffix(".py")


def summarise(collapsed: Path, top: int = 20) -> str:
    """A text report of the worker's main thread: call sites, libraries, functions."""
    own = _own_files()
    inclusive: Counter[str] = Counter()
    sites: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    where: Counter[str] = Counter()
    total = idle = 0
    for line in collapsed.read_text().splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        frames = [_parse(f) for f in m.group(1).split(";")]
        if not any(func == "_run_module_as_main" for func, _, _ in frames[:2]):
            continue  # not the main thread
        n = int(m.group(2))
        total += n
        for func, file, _ in {(f, fi, "") for f, fi, _ in frames}:
            inclusive[f"{func} ({file})"] += n
        leaf_func, leaf_file, _ = frames[-1]
        leaves[f"{leaf_func} ({leaf_file})"] += n
        if f"{leaf_func} ({leaf_file}".endswith(_IDLE) or leaf_func.endswith(_IDLE):
            idle += n
        # the innermost line of our own code, and what it was inside of
        for i in range(len(frames) - 1, -1, -1):
            func, file, lineno = frames[i]
            if file in own or file.startswith("flagsched/"):
                sites[f"{func} ({file}:{lineno})"] += n
                below = frames[i + 1 :]
                lib = next((f for _, f, _ in below if "/" in f and not f.startswith("<")), None)
                if lib is None and below:
                    lib = below[0][1]
                where[_package(lib) if lib else "flagsched (own code)"] += n
                break
    if not total:
        return "no samples of the main thread\n"
    pct = 100.0 / total
    out = [
        f"py-spy, 100 Hz, wall clock (idle included), main thread: {total} samples"
        f" ({total / 100:.1f} s).",
        "",
        "Where the time goes (the library the innermost own-code line called into):",
    ]
    out += [f"  {n * pct:5.1f}%  {pkg}" for pkg, n in where.most_common(10)]
    out += ["", f"Top {top} call sites (innermost flagsched line on the stack):"]
    out += [f"  {n * pct:5.1f}%  {s}" for s, n in sites.most_common(top)]
    out += ["", f"Top {top} leaf frames (self time):"]
    out += [f"  {n * pct:5.1f}%  {f}" for f, n in leaves.most_common(top)]
    out += ["", f"Top {top} functions by inclusive time:"]
    out += [f"  {n * pct:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(out) + "\n"
