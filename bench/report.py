"""Writing a suite run: ``latest.json`` (everything) and ``latest.md`` (the table)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from bench.suite import Result, Row


def fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    a = abs(value)
    if a >= 100:
        return f"{value:,.0f}"
    if a >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _verdict(row: Row) -> str:
    if row.met is None:
        return ""
    return "met" if row.met else f"**{row.gap or 'missed'}**"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(run: dict[str, Any], results: list[Result]) -> str:
    m = run["machine"]
    lines = [
        f"# flagsched benchmarks: {run['mode']} run, {run['started_at']}",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB RAM, Linux"
        f" {m['kernel']}; Python {m['python']}, Kafka {m['kafka']}, PostgreSQL"
        f" {m['postgresql']}; kafka-python {m['kafka_python']}, psycopg {m['psycopg']},"
        f" procrastinate {m['procrastinate']}.",
        f'flagsched at {m["flagsched_commit"]}. Services: {m["services"]}. "Applied" ='
        f" {m['applied_at']} of the applying transaction.",
        f"Suite took {run['seconds']:.0f} s. 1-minute load average at start"
        f" {fmt(run['loadavg_start'])}, at end {fmt(run['loadavg_end'])} (2 CPUs:"
        " above ~2 means other work competed for the CPUs).",
        "",
        "| benchmark | metric | value | unit | target | verdict | note |",
        "|---|---|---:|---|---|---|---|",
    ]
    for res in results:
        if res.error:
            lines.append(f"| {res.name} | ERROR | | | | | {_cell(res.error)} |")
        for row in res.rows:
            lines.append(
                f"| {row.benchmark} | {_cell(row.metric)} | {fmt(row.value)} | {row.unit} |"
                f" {_cell(row.target)} | {_verdict(row)} | {_cell(row.note)} |"
            )
    lines += ["", "## Notes", ""]
    for res in results:
        load = res.details.get("loadavg_before")
        lines.append(f"- **{res.name}** ({res.seconds:.0f} s, load before {fmt(load)}):")
        lines += [f"  - {_cell(n)}" for n in dict.fromkeys(res.notes)]
    return "\n".join(lines) + "\n"


def write(out_dir: Path, run: dict[str, Any], results: list[Result]) -> list[Path]:
    """latest.{json,md}, and a copy named by the mode (full.* / quick.*)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = dict(run, benchmarks=[dataclasses.asdict(r) for r in results])
    text_json = json.dumps(doc, indent=2, default=str) + "\n"
    text_md = markdown(run, results)
    written = []
    for stem in ("latest", run["mode"]):
        for suffix, text in ((".json", text_json), (".md", text_md)):
            path = out_dir / f"{stem}{suffix}"
            path.write_text(text)
            written.append(path)
    return written
