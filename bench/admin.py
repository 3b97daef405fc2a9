"""8. The admin API: list and detail latency over a large history, and create throughput.

Fills one database with ``admin_schedules`` schedules over 1,000 flags and five attempt
rows each (1,000,000 and 5,000,000 in the full suite), serves the API in this process on
a free port (uvicorn, as ``flagsched admin serve``), and measures over HTTP: list pages
(unfiltered, by status, by flag, by prefix, the next page by cursor), schedule details
(the row, its attempts and its plan), and creates per second from four clients.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.harness import world
from bench.suite import Context, Result
from flagsched.admin.api.server import AdminServer
from flagsched.admin.service.tokens import create_token
from flagsched.admin.settings import AdminSettings

NAME = "admin"

_FILL = """
INSERT INTO feature_flags (key) SELECT 'flag-' || g FROM generate_series(0, 999) g;
INSERT INTO flag_schedules (flag_key, updates, scheduled_at, status, retry_count,
                            finished_at, finished_attempt, last_error_class)
SELECT 'flag-' || (g %% 1000), '{"enabled": true}',
       now() - make_interval(secs => g), s.status, 4,
       CASE WHEN s.status IN ('applied', 'dead') THEN now() END,
       CASE WHEN s.status IN ('applied', 'dead') THEN 5 END,
       CASE WHEN s.status <> 'applied' THEN 'lock_contention' END
  FROM generate_series(1, %(n)s) g,
       LATERAL (SELECT CASE WHEN g %% 100 = 0 THEN 'dead' WHEN g %% 100 = 1 THEN 'retrying'
                            ELSE 'applied' END AS status) s;
UPDATE flag_schedules SET next_retry_at = now() + interval '1 hour' WHERE status = 'retrying';
INSERT INTO schedule_retry_attempts (schedule_id, attempt, started_at, finished_at, due_at,
                                     lateness_ms, outcome, error_class, worker)
SELECT s.id, a, s.scheduled_at, s.scheduled_at, s.scheduled_at, 5.0,
       CASE WHEN a < 5 THEN 'retry' WHEN s.status = 'dead' THEN 'dead' ELSE 'applied' END,
       CASE WHEN a < 5 OR s.status = 'dead' THEN 'lock_contention' END, 'bench'
  FROM flag_schedules s, generate_series(1, 5) a
 WHERE s.status <> 'retrying' OR a < 5;
ANALYZE;
"""


def _p99_ms(samples: list[float]) -> float:
    return (
        statistics.quantiles(samples, n=100)[98] * 1000 if len(samples) >= 2 else samples[0] * 1000
    )


def run(ctx: Context) -> Result:
    res = Result(NAME)
    n = int(ctx.sizes.pick(1_000_000, 20_000))
    requests = int(ctx.sizes.pick(300, 100))
    with world(ctx.services, NAME, ctx.raw_dir) as w, tempfile.TemporaryDirectory() as tmp:
        began = time.monotonic()
        with w.connect() as conn:
            for statement in filter(str.strip, _FILL.split(";")):
                # only the schedules' insert has a parameter (psycopg: one per statement)
                has_n = "%(n)s" in statement
                conn.execute(
                    statement if has_n else statement.replace("%%", "%"),
                    {"n": n} if has_n else None,
                )
            attempts = conn.execute("SELECT count(*) FROM schedule_retry_attempts").fetchone()
        res.notes.append(
            f"{n:,} schedules, {attempts[0] if attempts else 0:,} attempt rows, filled in"
            f" {time.monotonic() - began:.0f}s"
        )
        tokens = Path(tmp) / "tokens.json"
        token = create_token(tokens, "admin", name="bench")
        server = AdminServer(
            w.settings, AdminSettings(admin_port=0, admin_tokens_file=tokens, admin_pool_max=8)
        )
        server.start()
        try:
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
                rng = random.Random(7)
                lists, details = [], []
                first = client.get("/api/admin/schedules", params={"limit": 50}).json()
                queries: list[dict[str, object]] = [
                    {"limit": 50},
                    {"limit": 50, "status": "retrying"},
                    {"limit": 50, "status": "dead", "sort": "-scheduled_at"},
                    {"limit": 50, "cursor": first["next_cursor"]},
                ]
                for i in range(requests):
                    q: dict[str, object] = dict(queries[i % len(queries)])
                    if i % 5 == 4:
                        q = {"limit": 50, "flag_key": f"flag-{rng.randrange(1000)}"}
                    t0 = time.perf_counter()
                    got = client.get("/api/admin/schedules", params=q)  # type: ignore[arg-type]
                    assert got.status_code == 200
                    lists.append(time.perf_counter() - t0)
                for _ in range(requests):
                    sid = rng.randrange(1, n + 1)
                    path = f"/api/admin/flags/flag-{sid % 1000}/schedules/{sid}"
                    t0 = time.perf_counter()
                    assert client.get(path).status_code == 200
                    details.append(time.perf_counter() - t0)
            res.row("list p99 (50 per page)", _p99_ms(lists), "ms", note=f"{requests} requests")
            res.row("detail p99 (row, attempts, plan)", _p99_ms(details), "ms")
            res.row("create throughput, 4 clients", _creates(server.url, headers, ctx), "/s")
        finally:
            server.stop()
    res.notes.append("API in the benchmark process; the machine may be shared.")
    return res


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
