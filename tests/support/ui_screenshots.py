"""Screenshots of the admin UI's pages, written to docs/ui/ with the browser tests'
own harness (the real app over real Kafka and PostgreSQL, the system Chromium):

    python -m tests.support.ui_screenshots            # every page
    python -m tests.support.ui_screenshots overview   # only some

With ``FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS`` and ``FLAGSCHED_DATABASE_URL`` set, those
services are used (a database and topics of its own, dropped after); otherwise a dev
stack is started in a temp dir. A page is a function in :data:`PAGES`: it gets the
context (driver, URL, seeded ids) and leaves the browser on what to capture.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from flagsched.devstack import DevStack, Endpoints
from flagsched.devstack.endpoints import DATABASE_ENV, KAFKA_ENV
from flagsched.runtime.clients import make_producer
from flagsched.runtime.settings import Settings, load_settings
from flagsched.schemas.events import BreakerState, ControlEvent
from flagsched.schemas.headers import DLT_REASON, ERROR_CLASS, ERROR_MESSAGE, ORIGIN_TOPIC
from tests.support.admin import running_admin
from tests.support.browser import chrome, login
from tests.support.notify import publish
from tests.support.pipeline import (
    add_flag,
    add_schedule,
    connect,
    drop_template,
    fresh_database,
    make_template,
    seconds_from_now,
    setup_topics,
    test_settings,
    wait_until,
)
from tests.support.ui_data import add_dead

OUT = Path(__file__).resolve().parents[2] / "docs" / "ui"


@dataclass
class Shot:
    """What a page function gets."""

    driver: WebDriver
    url: str
    settings: Settings
    db: psycopg.Connection[Any]
    ids: dict[str, Any] = field(default_factory=dict)


def seed(db: psycopg.Connection[Any], settings: Settings) -> dict[str, Any]:
    """A plausible hour of schedules: applied and failed attempts per minute, retrying
    ones in the tiers, dead letters, and a closed breaker record."""
    for key in ("checkout.new-flow", "search.ranking-v2", "billing.invoices"):
        add_flag(db, key)
    for i in range(6):
        add_schedule(
            db,
            "search.ranking-v2",
            {"rollout_percentage": 10 * (i + 1)},
            at=seconds_from_now(900 + 600 * i),
        )
    db.execute(
        "WITH s AS (INSERT INTO flag_schedules (flag_key, updates, scheduled_at, status,"
        " retry_count, finished_at, finished_attempt)"
        " SELECT 'checkout.new-flow', '{\"enabled\": true}', now() - g * interval '50 seconds',"
        " 'applied', (g % 3 = 0)::int, now() - g * interval '50 seconds', 1 + (g % 3 = 0)::int"
        " FROM generate_series(1, 70) g RETURNING id, finished_at, retry_count)"
        " INSERT INTO schedule_retry_attempts (schedule_id, attempt, started_at, finished_at,"
        " outcome, error_class, error_message)"
        " SELECT id, 1, finished_at - interval '2 seconds', finished_at - interval '2 seconds',"
        " 'retry', 'lock_contention', 'canceling statement due to lock timeout'"
        " FROM s WHERE retry_count = 1"
        " UNION ALL"
        " SELECT id, 1 + retry_count, finished_at, finished_at, 'applied', NULL, NULL FROM s"
    )
    retrying = []
    for i, left_s in enumerate((0.2, 0.8, 1.5, 40.0)):
        sid = add_schedule(db, "billing.invoices", {"enabled": True})
        db.execute(
            "UPDATE flag_schedules SET status = 'retrying', retry_count = %s,"
            " dispatched_at = now(),"
            " next_retry_at = now() + %s * interval '1 second', first_failed_at = now(),"
            " last_error = 'could not serialize access due to concurrent update',"
            " last_error_class = 'serialization' WHERE id = %s",
            (i + 1, left_s, sid),
        )
        retrying.append(sid)
    dead = add_dead(db, "checkout.new-flow", 120)
    dead += add_dead(
        db,
        "billing.invoices",
        3,
        error_class="flag_not_found",
        message="flag 'billing.invoices-old' does not exist",
    )
    # The dead letters died over the hour, not all in this minute.
    db.execute(
        "UPDATE schedule_retry_attempts SET started_at = now() - (schedule_id % 57) * interval"
        " '1 minute', finished_at = now() - (schedule_id % 57) * interval '1 minute'"
        " WHERE outcome = 'dead'"
    )
    db.execute(
        "UPDATE flag_schedules s SET finished_at = a.finished_at FROM schedule_retry_attempts a"
        " WHERE a.schedule_id = s.id AND a.outcome = 'dead'"
    )
    publish(
        settings,
        settings.topic_layout().control,
        [
            ControlEvent(
                state=BreakerState.CLOSED,
                worker_id="worker-7f3a",
                reason="database answers",
                at=datetime.now(UTC),
            )
            .model_dump_json()
            .encode()
        ],
        key=b"worker-7f3a",
    )
    return {"retrying": retrying, "dead": dead}


def overview(s: Shot) -> None:
    s.driver.get(s.url + "/ui/")
    wait_until(lambda: "closed" in s.driver.find_element(By.ID, "breaker").text, what="breaker")


def schedules(s: Shot) -> None:
    s.driver.get(
        s.url + "/ui/schedules?status=dead&flag_prefix=checkout.&error_class=lock_contention"
    )


def bulk_confirm(s: Shot) -> None:
    schedules(s)
    s.driver.find_element(By.CSS_SELECTOR, "[data-action='schedules.bulk_retry']").click()
    wait_until(lambda: s.driver.find_elements(By.CSS_SELECTOR, "[data-count]"), what="confirm")


def bulk_progress(s: Shot) -> None:
    bulk_confirm(s)
    s.driver.find_element(By.CSS_SELECTOR, "[data-action=confirm]").click()
    wait_until(
        lambda: (
            s.driver.find_element(By.ID, "bulk-progress").get_attribute("data-status") == "done"
        ),
        timeout_s=60,
        what="the bulk retry",
    )


# --- the schedule detail, dead-letter and stats pages --------------------------------

#: The trace links point at a local Jaeger's UI (docs/observability.md).
TRACE_URL_TEMPLATE = "http://127.0.0.1:16686/trace/{trace_id}"


def _retrying_schedule(db: psycopg.Connection[Any]) -> int:
    """A schedule that failed twice on a held lock and waits for retry 2 (in ~2 min)."""
    sid = add_schedule(
        db,
        "checkout.new-flow",
        {"rollout_percentage": 50},
        at=seconds_from_now(-130),
        retry_policy={"base_s": 60, "multiplier": 2, "cap_s": 3600, "max_retries": 5},
    )
    message = "FlagLocked: flag 'checkout.new-flow' is locked by another transaction"
    for attempt, ago_s in ((1, 129.0), (2, 8.0)):
        db.execute(
            "INSERT INTO schedule_retry_attempts (schedule_id, attempt, started_at,"
            " finished_at, due_at, lateness_ms, outcome, error_class, error_message,"
            " next_attempt_at, worker, trace_id) VALUES (%(id)s, %(n)s,"
            " now() - %(ago)s * interval '1 second', now() - %(ago)s * interval '1 second',"
            " now() - %(ago)s * interval '1 second', %(late)s, 'retry', 'lock_contention',"
            " %(msg)s, now() + interval '112 seconds', 'worker-7f3a', %(trace)s)",
            {
                "id": sid,
                "n": attempt,
                "ago": ago_s,
                "late": 14.0 + attempt,
                "msg": message,
                "trace": "4bf92f3577b34da6a3ce929d0e0e4736",
            },
        )
    db.execute(
        "UPDATE flag_schedules SET status = 'retrying', retry_count = 2, dispatched_at ="
        " now() - interval '130 seconds', first_failed_at = now() - interval '129 seconds',"
        " next_retry_at = now() + interval '112 seconds', last_error = %s,"
        " last_error_class = 'lock_contention' WHERE id = %s",
        (message, sid),
    )
    return sid


def schedule_detail(s: Shot) -> None:
    sid = s.ids.setdefault("detail", _retrying_schedule(s.db))
    s.driver.get(f"{s.url}/ui/flags/checkout.new-flow/schedules/{sid}")


def schedule_confirm(s: Shot) -> None:
    schedule_detail(s)  # the link's target (the live part is replaced every second)
    link = s.driver.execute_script(
        "return document.querySelector(\"a[data-action='schedules.cancel']\").href"
    )
    s.driver.get(link)


def _poison(settings: Settings) -> None:
    layout = settings.topic_layout()
    producer = make_producer(settings)
    headers = [
        (DLT_REASON, b"poison"),
        (ERROR_CLASS, b"poison"),
        (ERROR_MESSAGE, b"DecodeError: the value is not a schedule wake-up (not JSON)"),
        (ORIGIN_TOPIC, layout.due.encode()),
    ]
    value = b'\xff\xfe{"schedule_id": 12, <script>alert(1)</script>\x00'
    producer.send(layout.dead_letter, key=b"checkout.new-flow", value=value, headers=headers)
    producer.flush(timeout=30)
    producer.close()


def dead_letters(s: Shot) -> None:
    if "poison" not in s.ids:
        _poison(s.settings)
        s.ids["poison"] = True
    s.driver.get(f"{s.url}/ui/dead-letters?flag_prefix=billing.")
    wait_until(
        lambda: s.driver.find_elements(By.CSS_SELECTOR, "#poison-list td.bytes"),
        timeout_s=30,
        what="the poison record",
    )


def redrive_dry_run(s: Shot) -> None:
    if "admin" not in s.ids:  # redriving needs the admin role
        s.driver.delete_all_cookies()
        login(s.driver, s.url, s.ids["tokens"]["admin"])
        s.ids["admin"] = True
    s.driver.get(f"{s.url}/ui/dead-letters/redrive?flag_prefix=billing.")


def redrive_progress(s: Shot) -> None:
    redrive_dry_run(s)
    s.driver.find_element(By.CSS_SELECTOR, "button[data-confirmed=redrive]").click()
    wait_until(
        lambda: s.driver.find_element(By.ID, "progress").get_attribute("data-status") == "done",
        timeout_s=60,
        what="the redrive",
    )


def stats(s: Shot) -> None:
    s.driver.get(f"{s.url}/ui/stats")


def login_page(s: Shot) -> None:
    s.driver.delete_all_cookies()
    s.driver.get(s.url + "/ui/login")


#: name -> page; the file is docs/ui/<name>.png. Login last: it logs out.
PAGES: dict[str, Callable[[Shot], None]] = {
    "overview": overview,
    "schedules": schedules,
    "bulk-confirm": bulk_confirm,
    "bulk-progress": bulk_progress,
    "schedule-detail": schedule_detail,
    "schedule-confirm": schedule_confirm,
    "dead-letters": dead_letters,
    "redrive-dry-run": redrive_dry_run,
    "redrive-progress": redrive_progress,
    "stats": stats,
    "login": login_page,
}


@contextlib.contextmanager
def _services() -> Iterator[Endpoints]:
    kafka, database = os.environ.get(KAFKA_ENV), os.environ.get(DATABASE_ENV)
    if kafka and database:
        yield Endpoints(kafka, database)
        return
    stack = DevStack(Path(tempfile.mkdtemp(prefix="flagsched-shots-")), load_settings().dev_home)
    try:
        yield stack.up()
    finally:
        stack.down()


def _full_page(driver: WebDriver, path: Path) -> None:
    # The window's height includes the browser's own bars (outer - inner height).
    height = driver.execute_script(
        "return document.documentElement.scrollHeight + window.outerHeight - window.innerHeight"
    )
    driver.set_window_size(1280, max(700, min(int(height) + 20, 2600)))
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 900)


def main(argv: list[str] | None = None) -> int:
    """Write docs/ui/<page>.png for the pages named (default: all)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pages", nargs="*", choices=[[], *PAGES], help="default: every page")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    with _services() as ends, tempfile.TemporaryDirectory() as tmp:
        make_template(ends.database_url)
        try:
            dsn = fresh_database(ends.database_url)
            # The default tier ladder, so the tier hops and the backlog read as in production.
            settings = test_settings(
                ends.kafka_bootstrap_servers,
                dsn,
                retry_tiers_s=Settings.model_fields["retry_tiers_s"].default,
            )
            setup_topics(settings)
            with (
                connect(dsn) as db,
                running_admin(settings, Path(tmp), trace_url_template=TRACE_URL_TEMPLATE) as api,
                chrome() as driver,
            ):
                shot = Shot(driver, api.url, settings, db, seed(db, settings))
                shot.ids["tokens"] = api.tokens
                login(driver, api.url, api.tokens["operator"])
                for name in args.pages or list(PAGES):
                    PAGES[name](shot)
                    _full_page(driver, OUT / f"{name}.png")
                    print(OUT / f"{name}.png")
        finally:
            drop_template(ends.database_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
