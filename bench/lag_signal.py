"""``python -m bench.lag_signal``: the consumer lag KEDA's Kafka scaler would see while
retries are held in a delay tier (docs/deployment.md, "Autoscaling").

Two real workers and a real dispatcher; ``--schedules`` schedules due now, whose flag
rows are locked by another transaction, so each first attempt fails with lock
contention and is retried through the one 30 s tier; the lock is released at once, so
the retries are held only until due, then apply. Every ``--every-s`` seconds it reads
what KEDA reads (end offsets and the group's committed offsets, per partition) and
prints the summed lag of the due and tier topics twice: as is, and with KEDA's
``excludePersistentLag`` on the tier (a partition whose committed offset did not move
since the previous sample is left out). Uses FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS and
FLAGSCHED_DATABASE_URL when both are set, else a dev stack of its own.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from bench.harness import group_lag, open_services, run_dir, wait_workers_ready, world

log = logging.getLogger("bench")
TIER_S = 30.0


def lag_by_partition(kafka: str, group: str, topic: str) -> list[tuple[int, int]]:
    """(end offset, committed offset) per partition of ``topic`` (empty topic: [])."""
    found = group_lag(kafka, group, [topic]).get(topic)
    return [(int(e), int(c)) for e, c in found["per_partition_end_committed"]] if found else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lag_signal", description=__doc__)
    parser.add_argument("--schedules", type=int, default=300)
    parser.add_argument("--every-s", type=float, default=3.0)
    parser.add_argument("--duration-s", type=float, default=60.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    base = run_dir()
    with (
        open_services(base) as services,
        world(
            services,
            "lag-signal",
            base,
            retry_tiers_s=(TIER_S,),
            backoff_base_s=TIER_S,
            backoff_cap_s=TIER_S,
            backoff_floor_s=TIER_S,  # lock_contention has a short policy of its own
            jitter="none",
            max_retries=3,
            apply_lock_timeout_ms=0,
            dispatch_lookahead_s=0,
            due_partitions=3,
            priority_partitions=3,
            tier_partitions=3,
        ) as w,
    ):
        layout = w.layout
        tier = layout.tier_topic(TIER_S)
        workers = [w.worker("worker-0"), w.worker("worker-1")]
        consumed = sum(s.partitions for s in layout.specs() if s.name in layout.consumed)
        wait_workers_ready(w, workers, consumed)
        with w.connect() as conn, w.connect() as locker:
            keys = [f"lag-{i}" for i in range(args.schedules)]
            conn.execute("INSERT INTO feature_flags (key) SELECT unnest(%s::text[])", (keys,))
            locker.autocommit = False
            locker.execute("SELECT key FROM feature_flags FOR UPDATE")  # the held row locks
            conn.execute(
                "INSERT INTO flag_schedules (flag_key, updates, scheduled_at)"
                " SELECT k, '{\"enabled\": true}', now() FROM unnest(%s::text[]) AS k",
                (keys,),
            )
            w.dispatcher()
            start = time.monotonic()
            released = False
            previous: dict[str, list[tuple[int, int]]] = {}
            rows: list[dict[str, Any]] = []
            while time.monotonic() - start < args.duration_s:
                failed, applied = conn.execute(
                    "SELECT count(*) FILTER (WHERE retry_count > 0),"
                    " count(*) FILTER (WHERE status = 'applied') FROM flag_schedules"
                ).fetchone()  # type: ignore[misc]
                if not released and failed == args.schedules:
                    locker.rollback()  # every first attempt failed: release the locks
                    released = True
                sample: dict[str, Any] = {"t_s": round(time.monotonic() - start, 1)}
                for name, topic in (("due", layout.due), ("tier", tier)):
                    parts = lag_by_partition(w.services.kafka, w.settings.group_id, topic)
                    raw = sum(end - committed for end, committed in parts)
                    still = [
                        i
                        for i, (_, committed) in enumerate(parts)
                        if previous.get(topic) and previous[topic][i][1] == committed
                    ]
                    keda = sum(end - c for i, (end, c) in enumerate(parts) if i not in still)
                    sample[f"{name}_lag"] = raw
                    if name == "tier":
                        sample["tier_lag_excluding_persistent"] = keda
                    previous[topic] = parts
                sample |= {"retried": failed, "applied": applied, "locks_released": released}
                rows.append(sample)
                print(json.dumps(sample), flush=True)
                if applied == args.schedules and sample["tier_lag_excluding_persistent"] == 0:
                    break
                time.sleep(args.every_s)  # the sampling period of a benchmark, not a wait
            held = conn.execute(
                "SELECT min(b.started_at - a.finished_at), max(b.started_at - a.finished_at),"
                " max(a.next_attempt_at - a.finished_at), max(b.topic)"
                " FROM schedule_retry_attempts a JOIN schedule_retry_attempts b"
                " ON b.schedule_id = a.schedule_id AND b.attempt = a.attempt + 1"
            ).fetchone()
            print(json.dumps({"retry_held_s": [str(v) for v in held or ()]}), flush=True)
    summary = {"at": datetime.now(UTC).isoformat(), "schedules": args.schedules, "tier_s": TIER_S}
    print(json.dumps(summary | {"samples": len(rows)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
