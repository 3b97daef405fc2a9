"""8. The admin API: list and detail latency over a large history, and create throughput.

Fills one database with N schedules over 1,000 flags and five attempt rows each
(1,000,000 and ~5,000,000 in the full suite; ``bench/admin_fill.py`` loads them in
minutes), serves the API in this process on a free port (uvicorn, as ``flagsched admin
serve``), and measures over HTTP: list pages of each kind in :data:`LISTS` (p99 per kind
and over all), schedule details (the row, its attempts and its plan), and creates per
second from four clients. The EXPLAIN (ANALYZE, BUFFERS) of each list's SQL is written
to ``bench/results/raw/admin/explain.txt``.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.admin_fill import fill
from bench.harness import world
from bench.suite import Context, Result
from flagsched.admin.api.server import AdminServer
from flagsched.admin.service.tokens import create_token
from flagsched.admin.settings import AdminSettings

NAME = "admin"

#: The list pages measured, by name: (query parameters, SQL the service runs for it,
#: for the EXPLAIN written to the raw directory). ``{cursor}`` is the first page's.
LISTS: dict[str, dict[str, object]] = {
    "unfiltered": {"limit": 50},
    "status retrying (the newest 1 %)": {"limit": 50, "status": "retrying"},
    "status dead, newest first": {"limit": 50, "status": "dead", "sort": "-scheduled_at"},
    "next page by cursor": {"limit": 50, "cursor": "{cursor}"},
    "one flag": {"limit": 50, "flag_key": "flag-{flag}"},
    "flag prefix": {"limit": 50, "flag_prefix": "flag-99"},
    "error class": {"limit": 50, "error_class": "lock_contention"},
    "status cancelled (the 100 newest)": {"limit": 50, "status": "cancelled"},
    "rare error class": {"limit": 50, "error_class": "deadlock"},
    "sorted by created_at": {"limit": 50, "sort": "-created_at"},
}


def _p99_ms(samples: list[float]) -> float:
    return (
        statistics.quantiles(samples, n=100)[98] * 1000 if len(samples) >= 2 else samples[0] * 1000
    )


def run(ctx: Context) -> Result:
    res = Result(NAME)
    n = int(ctx.sizes.pick(1_000_000, 20_000))
    requests = int(ctx.sizes.pick(300, 100))
    with world(ctx.services, NAME, ctx.raw_dir) as w, tempfile.TemporaryDirectory() as tmp:
        with w.connect() as conn:
            filled = fill(conn, n)
        steps = ", ".join(f"{k} {v:.0f}s" for k, v in filled.seconds.items())
        res.notes.append(
            f"{filled.schedules:,} schedules, {filled.attempts:,} attempt rows, filled in"
            f" {sum(filled.seconds.values()):.0f}s ({steps}; triggers"
            f" {'skipped' if filled.triggers_skipped else 'fired'})"
        )
        res.details["fill"] = {
            "schedules": filled.schedules,
            "attempts": filled.attempts,
            "seconds": filled.seconds,
        }
        tokens = Path(tmp) / "tokens.json"
        token = create_token(tokens, "admin", name="bench")
        server = AdminServer(
            w.settings, AdminSettings(admin_port=0, admin_tokens_file=tokens, admin_pool_max=8)
        )
        server.start()
        try:
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
                lists, details = _reads(client, n, requests)
            for name, samples in lists.items():
                res.row(f"list p99: {name}", _p99_ms(samples), "ms", note=f"{len(samples)} pages")
            every = [t for samples in lists.values() for t in samples]
            res.row("list p99 (50 per page), every kind", _p99_ms(every), "ms")
            res.row(
                "detail p99 (row, attempts, plan)",
                _p99_ms(details),
                "ms",
                note=f"{len(details)} requests",
            )
            res.row("create throughput, 4 clients", _creates(server.url, headers, ctx), "/s")
            with w.connect() as conn:
                _explain(conn, ctx.raw_dir / NAME / "explain.txt")
        finally:
            server.stop()
    res.notes.append("API in the benchmark process; the machine may be shared.")
    return res


def _reads(
    client: httpx.Client, n: int, requests: int
) -> tuple[dict[str, list[float]], list[float]]:
    rng = random.Random(7)
    first = client.get("/api/admin/schedules", params={"limit": 50}).json()
    lists: dict[str, list[float]] = {name: [] for name in LISTS}
    per_kind = max(10, requests // len(LISTS))
    for i in range(per_kind * len(LISTS)):
        name = list(LISTS)[i % len(LISTS)]
        q = {
            k: str(v).format(cursor=first["next_cursor"], flag=rng.randrange(1000))
            for k, v in LISTS[name].items()
        }
        t0 = time.perf_counter()
        got = client.get("/api/admin/schedules", params=q)
        assert got.status_code == 200, got.text
        lists[name].append(time.perf_counter() - t0)
    details = []
    for _ in range(requests):
        sid = rng.randrange(1, n + 1)
        path = f"/api/admin/flags/flag-{sid % 1000}/schedules/{sid}"
        t0 = time.perf_counter()
        assert client.get(path).status_code == 200
        details.append(time.perf_counter() - t0)
    return lists, details


def _explain(conn: psycopg.Connection[Any], path: Path) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of the SQL behind each list kind, for the record."""
    from flagsched.admin.service.access import Actor
    from flagsched.admin.service.schedules_read import ScheduleFilter, list_sql

    actor = Actor(name="bench", role="admin")
    filters = {
        "unfiltered": (ScheduleFilter(), "scheduled_at"),
        "status retrying (the newest 1 %)": (ScheduleFilter(status=["retrying"]), "scheduled_at"),
        "status dead, newest first": (ScheduleFilter(status=["dead"]), "-scheduled_at"),
        "one flag": (ScheduleFilter(flag_key="flag-7"), "scheduled_at"),
        "flag prefix": (ScheduleFilter(flag_prefix="flag-99"), "scheduled_at"),
        "error class": (ScheduleFilter(error_class="lock_contention"), "scheduled_at"),
        "status cancelled (the 100 newest)": (
            ScheduleFilter(status=["cancelled"]),
            "scheduled_at",
        ),
        "rare error class": (ScheduleFilter(error_class="deadlock"), "scheduled_at"),
        "sorted by created_at": (ScheduleFilter(), "-created_at"),
    }
    out = []
    for name, (f, sort) in filters.items():
        sql, params = list_sql(actor, f, sort=sort, cursor=None, limit=51)
        plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params).fetchall()
        out += [f"-- {name}", sql, *(r[0] for r in plan), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out))


def _creates(url: str, headers: dict[str, str], ctx: Context) -> float:
    duration = float(ctx.sizes.pick(10.0, 4.0))
    done = [0] * 4
    stop = time.monotonic() + duration

    def client(i: int) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
            while time.monotonic() < stop:
                body = {
                    "updates": {"rollout_percentage": done[i] % 100},
                    "scheduled_at": "2031-01-01T00:00:00Z",
                }
                assert c.post(f"/api/admin/flags/flag-{i}/schedules", json=body).status_code == 201
                done[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / duration
