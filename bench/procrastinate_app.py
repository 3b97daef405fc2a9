"""The same flag updates done with procrastinate, a PostgreSQL task queue.

One job per schedule, deferred with ``schedule_at`` = the schedule's due time;
the task applies it in one transaction (lock the schedule, update the flag,
write the change log, mark the schedule applied), exactly the rows flagsched
and the MVP write. Failures are retried by procrastinate's ``RetryStrategy``.

The worker runs through procrastinate's own API (``App.run_worker_async``) in
its own process: ``python -m bench.procrastinate_app --dsn DSN --concurrency N``.
Its polling interval and everything else are procrastinate's defaults: a job
scheduled in the future is picked up by the worker's periodic poll (5 s by
default), while a job deferred already due is announced by NOTIFY.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from typing import Any

import procrastinate
import psycopg
from procrastinate.types import JSONValue
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from bench import mvp_sql

TASK = "apply_flag_schedule"

RETRY = procrastinate.RetryStrategy(
    max_attempts=5,
    exponential_wait=2,
    retry_exceptions=[psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected],
)


def make_app(dsn: str) -> procrastinate.App:
    """A procrastinate app on ``dsn`` with the one task registered."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name=TASK, retry=RETRY, pass_context=True)
    async def apply_flag_schedule(context: procrastinate.JobContext, schedule_id: int) -> None:
        pool: AsyncConnectionPool[Any] = context.additional_context["pool"]
        async with pool.connection() as conn, conn.transaction():
            await _apply(conn, schedule_id, context.job.attempts + 1)

    return app


async def _apply(conn: psycopg.AsyncConnection[Any], schedule_id: int, attempt: int) -> None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT id, flag_key, updates, status FROM flag_schedules WHERE id = %s FOR UPDATE",
        (schedule_id,),
    )
    row = await cur.fetchone()
    if row is None or row["status"] == "applied":
        return
    await cur.execute(mvp_sql.LOCK_FLAG, (row["flag_key"],))
    before = await cur.fetchone()
    if before is None:
        raise LookupError(f"flag {row['flag_key']} not found")
    await cur.execute(*mvp_sql.update_flag(row["flag_key"], row["updates"]))
    after = await cur.fetchone()
    assert after is not None
    version = after.pop("version")
    await cur.execute(
        mvp_sql.LOG_CHANGE,
        (row["flag_key"], schedule_id, attempt, version, json.dumps(before), json.dumps(after)),
    )
    await cur.execute(mvp_sql.MARK_APPLIED, (schedule_id,))


async def apply_schema(dsn: str) -> None:
    """procrastinate's own schema, in the benchmark's database."""
    app = make_app(dsn)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def defer(dsn: str, jobs: list[tuple[int, Any]], chunk: int = 1000) -> None:
    """Defer one job per (schedule id, due time); jobs sharing a due time go in batches."""
    app = make_app(dsn)
    task = app.tasks[TASK]
    async with app.open_async():
        by_due: dict[Any, list[int]] = {}
        for sid, due in jobs:
            by_due.setdefault(due, []).append(sid)
        for due, ids in by_due.items():
            deferrer = task.configure(schedule_at=due) if due is not None else task
            for i in range(0, len(ids), chunk):
                kwargs: list[dict[str, JSONValue]] = [
                    {"schedule_id": sid} for sid in ids[i : i + chunk]
                ]
                await deferrer.batch_defer_async(*kwargs)


async def _worker(dsn: str, concurrency: int) -> None:
    async with AsyncConnectionPool(
        dsn, min_size=1, max_size=concurrency, kwargs={"autocommit": True}, open=False
    ) as pool:
        app = make_app(dsn)
        async with app.open_async():
            await app.run_worker_async(
                concurrency=concurrency,
                additional_context={"pool": pool},
                install_signal_handlers=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description="a procrastinate worker for the bench")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("procrastinate.worker").setLevel(logging.INFO)
    asyncio.run(_worker(args.dsn, args.concurrency))


if __name__ == "__main__":
    main()
