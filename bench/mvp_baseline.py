"""A faithful rebuild of the seed's MVP design, the baseline flagsched is compared with.

The seed (shared/seed, WISH-2119 / WISH-20260) runs a cron job **once a minute**
that claims due schedules with ``FOR UPDATE SKIP LOCKED`` and applies them, and
retries a failed one when ``next_retry_at <= now()`` and ``retry_count <
max_retries``, with an exponential backoff of ``2^n`` minutes plus a random
0-30 s jitter. This module is that loop:

* it wakes every ``interval_s`` (60 s in the seed; a parameter) on a fixed
  cadence, like cron, and processes everything due, then sleeps;
* each schedule is claimed (``LIMIT 1 FOR UPDATE SKIP LOCKED``, due order) and
  applied in **its own transaction**: lock the flag, update it, write the change
  log, mark the schedule applied;
* any error is a failure (the MVP has no error table): ``retry_count += 1`` and
  ``next_retry_at = now() + 2^retry_count x backoff_unit_s + U(0, jitter_max_s)``
  (``backoff_unit_s`` = 60 s is the seed's "minutes"), ``dead`` once
  ``retry_count`` reaches ``max_retries``.

The seed's failed state is ``status = 'failed'``; flagsched's schema (which the
bench reuses so every system writes the same rows) calls that ``retrying``.
Two claims keep it honest rather than a strawman: pending rows are found through
the partial index on ``scheduled_at`` and retries through the
``(status, next_retry_at, retry_count)`` index the seed's notes recommend.

Run as a process: ``python -m bench.mvp_baseline --dsn DSN [--interval-s 5 ...]``;
SIGTERM stops it after the schedule in hand.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from bench import mvp_sql

log = logging.getLogger("bench.mvp")


@dataclass(frozen=True)
class MvpConfig:
    """The MVP's knobs; defaults are the seed's."""

    interval_s: float = 60.0
    max_retries: int = 5
    backoff_unit_s: float = 60.0
    jitter_max_s: float = 30.0
    lock_timeout_ms: int | None = None


_CLAIM_RETRY = """
SELECT * FROM flag_schedules
 WHERE status = 'retrying' AND next_retry_at <= now()
   AND retry_count < coalesce(max_retries, %(max)s)
 ORDER BY next_retry_at, id
 LIMIT 1
 FOR UPDATE SKIP LOCKED
"""

_CLAIM_PENDING = """
SELECT * FROM flag_schedules
 WHERE status = 'pending' AND scheduled_at <= now()
 ORDER BY scheduled_at, id
 LIMIT 1
 FOR UPDATE SKIP LOCKED
"""


def _apply(conn: psycopg.Connection[dict[str, Any]], row: dict[str, Any]) -> None:
    """Apply one schedule's update to its flag and write the change log (bench/mvp_sql.py)."""
    flag = conn.execute(mvp_sql.LOCK_FLAG, (row["flag_key"],)).fetchone()
    if flag is None:
        raise LookupError(f"flag {row['flag_key']} not found")
    after = conn.execute(*mvp_sql.update_flag(row["flag_key"], row["updates"])).fetchone()
    assert after is not None
    version = after.pop("version")
    conn.execute(
        mvp_sql.LOG_CHANGE,
        (
            row["flag_key"],
            row["id"],
            row["retry_count"] + 1,
            version,
            json.dumps(flag, default=str),
            json.dumps(after, default=str),
        ),
    )
    conn.execute(mvp_sql.MARK_APPLIED, (row["id"],))


def _fail(
    conn: psycopg.Connection[dict[str, Any]],
    row: dict[str, Any],
    exc: BaseException,
    cfg: MvpConfig,
    rng: random.Random,
) -> None:
    n = row["retry_count"] + 1
    limit = row["max_retries"] if row["max_retries"] is not None else cfg.max_retries
    delay_s = 2**n * cfg.backoff_unit_s + rng.uniform(0, cfg.jitter_max_s)
    conn.execute(
        "UPDATE flag_schedules SET status = %s, retry_count = %s,"
        " next_retry_at = now() + make_interval(secs => %s), last_error = %s,"
        " first_failed_at = coalesce(first_failed_at, now()), updated_at = now() WHERE id = %s",
        ("dead" if n >= limit else "retrying", n, delay_s, str(exc)[:1000], row["id"]),
    )


def process_one(
    conn: psycopg.Connection[dict[str, Any]], cfg: MvpConfig, rng: random.Random
) -> bool:
    """Claim and apply (or fail) one due schedule in one transaction; False if none is due."""
    with conn.transaction():
        if cfg.lock_timeout_ms is not None:
            conn.execute(f"SET LOCAL lock_timeout = '{int(cfg.lock_timeout_ms)}ms'")
        row = conn.execute(_CLAIM_RETRY, {"max": cfg.max_retries}).fetchone()
        if row is None:
            row = conn.execute(_CLAIM_PENDING).fetchone()
        if row is None:
            return False
        try:
            with conn.transaction():  # a failed apply rolls back only itself
                _apply(conn, row)
        except (psycopg.Error, LookupError) as exc:
            log.info("schedule %s failed: %s", row["id"], exc)
            _fail(conn, row, exc, cfg, rng)
    return True


def run(dsn: str, cfg: MvpConfig, stop: threading.Event) -> None:
    """The cron loop: on every tick, process until nothing is due, then sleep to the next."""
    rng = random.Random(0)
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        tick = time.monotonic()
        log.info("mvp loop running every %.1fs", cfg.interval_s)
        while not stop.is_set():
            done = 0
            while not stop.is_set() and process_one(conn, cfg, rng):
                done += 1
            if done:
                log.info("tick processed %d schedules", done)
            tick += cfg.interval_s
            while tick < time.monotonic():  # a long tick skips the cron slots it overran
                tick += cfg.interval_s
            stop.wait(tick - time.monotonic())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--interval-s", type=float, default=60.0)
    parser.add_argument("--max-retries", type=int, default=5)
    parser.add_argument("--backoff-unit-s", type=float, default=60.0)
    parser.add_argument("--jitter-max-s", type=float, default=30.0)
    parser.add_argument("--lock-timeout-ms", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    cfg = MvpConfig(
        args.interval_s,
        args.max_retries,
        args.backoff_unit_s,
        args.jitter_max_s,
        args.lock_timeout_ms,
    )
    run(args.dsn, cfg, stop)


if __name__ == "__main__":
    main()
