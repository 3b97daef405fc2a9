"""``python -m bench.due_order``: the burst of issue 18, and how its schedules ended.

N schedules on N / PER_FLAG flags (round-robin, so one flag's ids interleave with the
others'), every one setting ``rollout_percentage``, all due at one instant T and inserted
ahead of it so the dispatcher pre-dispatches them into the delay tiers; one dispatcher
and 2 worker processes. Prints the status counts, how many flags' change logs are in
due order, and the time from T to the last applied. Not part of the suite
(``python -m bench``): a measurement for the issue's closing note. Uses
FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS / FLAGSCHED_DATABASE_URL when both are set, else a
fresh dev stack.
"""

from __future__ import annotations

import argparse
import shutil
import time
from datetime import timedelta

from bench.harness import open_services, run_dir, world
from bench.runs import Run, _start_dispatcher, _start_workers
from bench.workload import add_flags, add_schedules, at_once, flag_keys, utcnow


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.due_order", description=__doc__)
    parser.add_argument("--schedules", type=int, default=2_000)
    parser.add_argument("--per-flag", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ahead-s", type=float, default=6.0, help="insert this far before T")
    args = parser.parse_args()
    work = run_dir()
    try:
        with (
            open_services(work) as services,
            world(services, "due-order", work / "raw") as w,
            w.connect() as conn,
        ):
            keys = flag_keys(args.schedules // args.per_flag)
            add_flags(conn, keys)
            procs = _start_workers(w, args.workers)
            run = Run("due-order", args.workers, args.schedules, False, utcnow(), [])
            _start_dispatcher(w, None, run)
            due = utcnow() + timedelta(seconds=args.ahead_s)
            add_schedules(conn, at_once(keys, args.schedules, due))
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                left = conn.execute(
                    "SELECT count(*) FROM flag_schedules WHERE status NOT IN"
                    " ('applied', 'superseded', 'dead', 'cancelled')"
                ).fetchone()
                if left is not None and left[0] == 0:
                    break
                time.sleep(0.2)
            statuses = dict(
                conn.execute("SELECT status, count(*) FROM flag_schedules GROUP BY 1").fetchall()
            )
            ordered = conn.execute(
                "SELECT count(*) FILTER (WHERE logged = due), count(*) FROM ("
                " SELECT (SELECT array_agg(l.schedule_id ORDER BY l.version)"
                "           FROM flag_change_log l WHERE l.flag_key = f.key) AS logged,"
                "        (SELECT array_agg(s.id ORDER BY s.scheduled_at, s.id)"
                "           FROM flag_schedules s WHERE s.flag_key = f.key) AS due"
                " FROM feature_flags f) x"
            ).fetchone()
            last = conn.execute(
                "SELECT max(finished_at) - %s FROM schedule_retry_attempts", (due,)
            ).fetchone()
            w.stop_all()
            del procs
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert ordered is not None
    assert last is not None
    print(f"{args.schedules} schedules on {len(keys)} flags, {args.workers} workers")
    print(f"statuses: {statuses}")
    print(f"flags whose change log is in due order: {ordered[0]} of {ordered[1]}")
    print(f"due instant -> last attempt finished: {last[0]}")


if __name__ == "__main__":
    main()
