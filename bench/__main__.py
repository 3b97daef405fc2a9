"""``python -m bench``: run the benchmark suite and write bench/results/latest.{json,md}.

Starts its own Kafka + PostgreSQL (a fresh dev stack in a temporary directory,
broker jars cached in ~/.cache/flagsched) unless FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS
and FLAGSCHED_DATABASE_URL are both set. Every benchmark has its own database,
topic prefix and consumer group. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import (
    admin,
    baselines,
    burst,
    isolation,
    machine,
    membership,
    memory,
    priority,
    punctuality,
    report,
    throughput,
)
from bench.harness import open_services, run_dir
from bench.suite import Context, Result, Sizes

log = logging.getLogger("bench")

#: In the order they run (and appear in the table).
BENCHMARKS: dict[str, Callable[[Context], Result]] = {
    throughput.NAME: throughput.run,
    baselines.NAME: baselines.run,
    punctuality.NAME: punctuality.run,
    burst.NAME: burst.run,
    priority.NAME: priority.run,
    isolation.NAME: isolation.run,
    memory.NAME: memory.run,
    membership.NAME: membership.run,
    admin.NAME: admin.run,
}
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated benchmarks to run, of: {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile a worker (py-spy) in an extra 1-worker throughput run;"
        " writes bench/results/profile-worker.txt",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where results go")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    args.names = names or list(BENCHMARKS)
    if args.profile and throughput.NAME not in args.names:
        args.names.insert(0, throughput.NAME)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("kafka", "flagsched", "procrastinate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    raw = args.results / "raw"
    shutil.rmtree(raw, ignore_errors=True)  # the previous run's logs
    work = run_dir()
    started, t0 = datetime.now(UTC), time.monotonic()
    results: list[Result] = []
    try:
        with open_services(work) as services:
            ctx = Context(services, raw, Sizes(args.quick), profile=args.profile)
            run = {
                "mode": "quick" if args.quick else "full",
                "started_at": started.strftime("%Y-%m-%d %H:%M UTC"),
                "machine": machine.describe(services),
                "loadavg_start": machine.loadavg(),
                "only": args.names,
            }
            for name in args.names:
                results.append(_run_one(ctx, name))
                run |= {"seconds": time.monotonic() - t0, "loadavg_end": machine.loadavg()}
                report.write(args.results, run, results)  # a partial table survives a crash
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print((args.results / "latest.md").read_text())
    return 1 if any(r.error for r in results) else 0


def _run_one(ctx: Context, name: str) -> Result:
    log.info("=== %s", name)
    load, t = machine.loadavg(), time.monotonic()
    try:
        res = BENCHMARKS[name](ctx)
    except Exception as exc:
        log.exception("%s failed", name)
        res = Result(name, error=f"{type(exc).__name__}: {exc}")
        res.details["traceback"] = traceback.format_exc()
    res.seconds = time.monotonic() - t
    res.details["loadavg_before"] = load
    log.info("=== %s done in %.0fs", name, res.seconds)
    return res


if __name__ == "__main__":
    sys.exit(main())
