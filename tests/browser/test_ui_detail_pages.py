"""The schedule detail, dead-letter and stats pages in a real browser, over the real
admin app, Kafka, PostgreSQL, dispatcher and worker (tests/browser/conftest.py).

* A schedule whose flag row is locked by another connection (a real held row lock)
  fails twice; the lock is released and the third attempt applies. The open page's
  timeline grows from one attempt to three by itself: the same document throughout
  (a marker set in it survives), no reload.
* Cancel and edit from the detail page, each through its confirm step.
* Dead letters redriven through the dry run (its count) and the confirm step, and the
  progress page reaching the total by itself; poison bytes shown escaped.
* axe-core finds no serious or critical violation on any of these pages.
"""

from __future__ import annotations

from typing import Any

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from flagsched.runtime.clients import make_producer
from flagsched.schemas.headers import RecordHeaders
from tests.support.browser import assert_accessible, console_errors
from tests.support.pipeline import (
    add_flag,
    add_schedule,
    attempts,
    hold_flag_lock,
    schedule,
    seconds_from_now,
    status_is,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.browser]


#: A same-origin form POST from the page, following redirects: (status, final URL, body).
_POST = """
const [url, fields, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
fetch(url, {method: "POST", body: new URLSearchParams(fields)})
  .then(r => r.text().then(t => done({status: r.status, url: r.url, body: t})))
  .catch(e => done({status: -1, url: "", body: String(e)}));
"""


def css(driver: WebDriver, selector: str) -> list[Any]:
    return driver.find_elements(By.CSS_SELECTOR, selector)


def nodes(driver: WebDriver, selector: str) -> list[dict[str, str]]:
    """The elements matching ``selector`` read in one go (the live part is replaced
    every second, so a found element may be gone a moment later): each one's
    attributes and its text as ``"text"``."""
    found: list[dict[str, str]] = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => Object.assign("
        "Object.fromEntries([...e.attributes].map(a => [a.name, a.value])),"
        " {text: e.textContent.trim()}));",
        selector,
    )
    return found


def live_attr(driver: WebDriver, name: str) -> str:
    """An attribute of the page's live part (re-read: htmx replaces the element)."""
    found = driver.execute_script(
        "const e = document.getElementById('live'); return e && e.getAttribute(arguments[0]);",
        name,
    )
    return str(found or "")


def click(driver: WebDriver, selector: str, *, arrive: str | None = None) -> None:
    """Click the element (found again if the live part replaced it in between); with
    ``arrive``, wait until the page whose URL holds it has loaded."""

    def clicked() -> bool:
        try:
            driver.find_element(By.CSS_SELECTOR, selector).click()
        except StaleElementReferenceException:
            return False
        return True

    wait_until(clicked, timeout_s=10, what=f"a click on {selector}")
    if arrive is not None:
        wait_until(
            lambda: (
                arrive in driver.current_url
                and driver.execute_script("return document.readyState") == "complete"
            ),
            timeout_s=15,
            what=f"the page {arrive}",
        )


def test_the_timeline_grows_to_three_attempts_without_a_reload(
    browser, admin_ui, login_as, pipeline, db, dsn
):
    add_flag(db, "locked.flag")
    _, release = hold_flag_lock(dsn, "locked.flag")
    try:
        sid = add_schedule(
            db, "locked.flag", {"enabled": True}, retry_policy={"base_s": 1.0, "jitter": "none"}
        )
        login_as("operator")
        browser.get(f"{admin_ui.url}/ui/flags/locked.flag/schedules/{sid}")
        browser.execute_script("document.documentElement.dataset.sameDocument = 'yes';")
        seen = []
        for n in (1, 2):

            def shows(n: int = n) -> bool:
                return live_attr(browser, "data-attempts") == str(n)

            wait_until(shows, what=f"{n} attempts on the page")
            seen.append(n)
            assert live_attr(browser, "data-status") == "retrying"
            past = nodes(browser, "svg.timeline g.mark[data-planned=false]")
            assert len(past) == n
            assert all("failed" in g["class"] for g in past)
            planned = nodes(browser, "svg.timeline g.mark[data-planned=true] text.label")
            assert planned and planned[0]["text"].startswith(f"Retry {n} "), planned
            rows = nodes(browser, "table.attempts tr[data-outcome=retry]")
            assert len(rows) == n and "lock_contention" in rows[-1]["text"]
        wait_until(lambda: len(attempts(db, sid)) >= 2, what="two failed attempts")
        assert len(attempts(db, sid)) == 2, "the third attempt waits for the lock"
    finally:
        release()
    wait_until(lambda: live_attr(browser, "data-status") == "applied", what="applied on the page")
    seen.append(3)
    assert seen == [1, 2, 3]
    assert browser.execute_script("return document.documentElement.dataset.sameDocument") == "yes"
    assert live_attr(browser, "data-attempts") == "3"
    marks = nodes(browser, "svg.timeline g.mark")
    assert [m["data-attempt"] for m in marks] == ["1", "2", "3"]
    assert [m["data-planned"] for m in marks] == ["false"] * 3
    assert "applied" in marks[2]["class"]
    assert nodes(browser, "svg.timeline text.now")
    outcomes = [r["data-outcome"] for r in nodes(browser, "table.attempts tbody tr")]
    assert outcomes == ["retry", "retry", "applied"]
    # Terminal: the live part no longer polls, and there is no action left to take.
    assert not browser.find_element(By.ID, "live").get_attribute("hx-trigger")
    assert css(browser, "[data-action]") == []
    assert status_is(db, sid, "applied")
    assert_accessible(browser)
    assert not [e for e in console_errors(browser) if "Content Security Policy" in e]


def test_cancel_from_the_detail_page_through_its_confirm_step(browser, admin_ui, login_as, db):
    add_flag(db, "to.cancel")
    sid = add_schedule(db, "to.cancel", {"rollout_percentage": 40}, at=seconds_from_now(3600))
    login_as("operator")
    browser.get(f"{admin_ui.url}/ui/flags/to.cancel/schedules/{sid}")
    planned = nodes(browser, "svg.timeline g.mark[data-planned=true] text.label")
    assert planned[0]["text"] == "Attempt 1 in 1 hour"
    assert_accessible(browser)
    click(browser, "a[data-action='schedules.cancel']", arrive="/confirm/cancel")
    assert "/confirm/cancel" in browser.current_url
    assert status_is(db, sid, "pending"), "the confirm step changes nothing"
    assert_accessible(browser)
    form = {
        name: browser.find_element(By.NAME, name).get_attribute("value")
        for name in ("csrf_token", "idempotency_key")
    }
    click(browser, "button[data-confirmed=cancel]")
    wait_until(lambda: "done=cancel" in browser.current_url, what="back on the detail page")
    assert browser.find_element(By.CSS_SELECTOR, "[role=status]").text == "Cancelled."
    assert live_attr(browser, "data-status") == "cancelled"
    assert status_is(db, sid, "cancelled")
    [row] = db.execute("SELECT * FROM admin_audit WHERE action = 'schedule.cancel'").fetchall()
    assert row["actor"] == "token:operator"
    assert [str(i) for i in row["object_ids"]] == [str(sid)]
    # The same confirm form submitted again (a double click, a stale tab) is a replay
    # of its Idempotency-Key: the same answer, nothing more written. A new confirm of
    # a cancelled schedule is refused with the reason.
    again = browser.execute_async_script(_POST, f"/ui/flags/to.cancel/schedules/{sid}/cancel", form)
    assert again["status"] == 200 and again["url"].endswith("done=cancel"), again
    form["idempotency_key"] = "another-key"
    refused = browser.execute_async_script(
        _POST, f"/ui/flags/to.cancel/schedules/{sid}/cancel", form
    )
    assert refused["status"] == 409 and "Cancel the schedule failed" in refused["body"]
    assert len(db.execute("SELECT 1 FROM admin_audit").fetchall()) == 1


def test_retry_now_reopens_a_dead_schedule_through_its_confirm_step(
    browser, admin_ui, login_as, pipeline, db
):
    sid = add_schedule(db, "born.late", {"enabled": True})  # no such flag yet: dead at once
    wait_until(lambda: status_is(db, sid, "dead"), what="dead-lettered")
    add_flag(db, "born.late")
    login_as("operator")
    browser.get(f"{admin_ui.url}/ui/flags/born.late/schedules/{sid}")
    assert live_attr(browser, "data-status") == "dead"
    assert not browser.find_element(By.ID, "live").get_attribute("hx-trigger")
    assert css(browser, "a[data-action='schedules.cancel']") == []  # dead: nothing to cancel
    click(browser, "a[data-action='schedules.retry']", arrive="/confirm/retry")
    assert "does not count against max_retries" in browser.page_source
    assert_accessible(browser)
    click(browser, "button[data-confirmed=retry]")
    wait_until(lambda: "done=retry" in browser.current_url, what="back on the detail page")
    # Re-opened, it polls again until the worker applies attempt 2.
    wait_until(lambda: live_attr(browser, "data-status") == "applied", what="applied")
    outcomes = [r["data-outcome"] for r in nodes(browser, "table.attempts tbody tr")]
    assert outcomes == ["dead", "applied"]
    [row] = db.execute("SELECT * FROM admin_audit WHERE action = 'schedule.retry'").fetchall()
    assert row["actor"] == "token:operator"


#: Jaeger's UI, as docs/observability.md gives the template for it.
JAEGER = "http://127.0.0.1:16686/trace/{trace_id}"


@pytest.mark.admin_settings(trace_url_template=JAEGER)
def test_attempts_link_to_their_trace_and_show_hostile_text_as_text(
    browser, admin_ui, login_as, db
):
    add_flag(db, "traced")
    sid = add_schedule(db, "traced", {"enabled": True})
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    hostile = "<img src=x onerror=\"document.title='owned'\"> & <b>bold</b>"
    db.execute(
        "INSERT INTO schedule_retry_attempts (schedule_id, attempt, started_at, finished_at,"
        " due_at, lateness_ms, outcome, error_class, error_message, worker, trace_id)"
        " VALUES (%s, 1, now() - interval '3 seconds', now() - interval '3 seconds',"
        " now() - interval '3 seconds', 12.5, 'retry', 'lock_contention', %s, 'w-1', %s)",
        (sid, hostile, trace_id),
    )
    db.execute(
        "UPDATE flag_schedules SET status = 'retrying', retry_count = 1,"
        " next_retry_at = now() + interval '1 hour', last_error = %s,"
        " last_error_class = 'lock_contention' WHERE id = %s",
        (hostile, sid),
    )
    login_as("viewer")
    browser.get(f"{admin_ui.url}/ui/flags/traced/schedules/{sid}")
    [link] = nodes(browser, "table.attempts a.trace")
    assert link["href"] == f"http://127.0.0.1:16686/trace/{trace_id}"
    [row] = nodes(browser, "table.attempts tbody tr")
    assert hostile in row["text"]  # shown as text: no element was made of it
    assert css(browser, "#live img, #live b") == [] and browser.title != "owned"
    labels = [m["text"] for m in nodes(browser, "svg.timeline g.mark text.label")]
    assert labels[:3] == ["Attempt 1 failed", "Retry 1 in 1 hour", "Retry 2 in 1 hour"]
    assert css(browser, "[data-action]") == []  # a viewer
    assert_accessible(browser)


def test_edit_from_the_detail_page_through_its_review_step(browser, admin_ui, login_as, db):
    add_flag(db, "to.edit")
    sid = add_schedule(db, "to.edit", {"enabled": True}, at=seconds_from_now(7200))
    login_as("operator")
    browser.get(f"{admin_ui.url}/ui/flags/to.edit/schedules/{sid}")
    click(browser, "a[data-action='schedules.edit']", arrive="/edit")
    assert_accessible(browser)
    browser.find_element(By.CSS_SELECTOR, "select[name=priority] option[value=critical]").click()
    field = browser.find_element(By.NAME, "max_retries")
    field.clear()
    field.send_keys("7")
    click(browser, "form[action$='/edit/review'] button[type=submit]", arrive="/edit/review")
    changed = [r.get_attribute("data-field") for r in css(browser, "table.changes tr[data-field]")]
    assert changed == ["max_retries", "priority"]
    assert schedule(db, sid)["priority"] == "normal", "the review changes nothing"
    assert_accessible(browser)
    click(browser, "button[data-confirmed=edit]")
    wait_until(lambda: "done=edit" in browser.current_url, what="saved")
    row = schedule(db, sid)
    assert (row["priority"], row["max_retries"]) == ("critical", 7)


def test_a_viewer_sees_the_detail_page_without_actions(browser, admin_ui, login_as, db):
    add_flag(db, "viewed")
    sid = add_schedule(db, "viewed", {"enabled": True}, at=seconds_from_now(600))
    login_as("viewer")
    browser.get(f"{admin_ui.url}/ui/flags/viewed/schedules/{sid}")
    assert live_attr(browser, "data-status") == "pending"
    assert css(browser, "[data-action]") == []
    browser.get(f"{admin_ui.url}/ui/flags/viewed/schedules/{sid}/confirm/cancel")
    assert css(browser, "button[data-confirmed]") == []
    # What the operator's confirm button would post, with the viewer's own session and
    # CSRF token: refused by the access table, and nothing changes.
    csrf = browser.find_element(By.NAME, "csrf_token").get_attribute("value")
    for verb in ("cancel", "retry", "edit"):
        forged = browser.execute_async_script(
            _POST,
            f"/ui/flags/viewed/schedules/{sid}/{verb}",
            {"csrf_token": csrf, "priority": "critical"},
        )
        assert forged["status"] == 403 and "may not" in forged["body"], (verb, forged)
    row = schedule(db, sid)
    assert (row["status"], row["priority"]) == ("pending", "normal")


def test_redrive_dead_letters_through_the_dry_run_and_the_confirm_step(
    browser, admin_ui, login_as, pipeline, db, settings
):
    # Schedules of a flag that does not exist yet are dead-lettered at once (permanent).
    ids = [add_schedule(db, "late.flag", {"enabled": True}) for _ in range(6)]
    other = add_schedule(db, "other.flag", {"enabled": True})
    wait_until(
        lambda: all(status_is(db, s, "dead") for s in [*ids, other]), what="all dead-lettered"
    )
    add_flag(db, "late.flag")  # now a redrive can apply them
    # A poison record: undecodable bytes, some that look like HTML.
    producer = make_producer(settings)
    junk = b"\xff\xfe<script>document.title='owned'</script>"
    headers = RecordHeaders(attempt=1, due_ms=0).encode()
    producer.send(settings.topic_layout().due, key=b"<b>k</b>", value=junk, headers=headers).get(
        timeout=10
    )
    producer.close()

    login_as("admin")
    browser.get(f"{admin_ui.url}/ui/dead-letters?flag_prefix=late.")
    assert len(css(browser, "table.dead tr[data-schedule]")) == 6
    cell = wait_until(
        lambda: css(browser, "#poison-list td.bytes pre"), timeout_s=30, what="the poison record"
    )[0]
    assert cell.text == "\\xff\\xfe<script>document.title='owned'</script>"
    assert css(browser, "#poison-list script") == [] and browser.title != "owned"
    assert "<b>k</b>" in css(browser, "#poison-list tr[data-offset]")[0].text
    assert_accessible(browser)

    click(browser, "a[data-action='dead_letters.redrive']", arrive="/dead-letters/redrive")
    count = browser.find_element(By.CSS_SELECTOR, "#dry-run [data-count]")
    assert count.get_attribute("data-count") == "6"
    assert all(status_is(db, s, "dead") for s in ids), "the dry run changes nothing"
    assert_accessible(browser)
    rate = browser.find_element(By.NAME, "rate_per_s")
    rate.send_keys("3")
    click(browser, "form[aria-label='Redrive limits'] button", arrive="rate_per_s=3")
    assert browser.find_element(By.CSS_SELECTOR, "#dry-run [data-count]").text == "6"
    click(browser, "button[data-confirmed=redrive]")
    wait_until(lambda: "/ui/redrives/" in browser.current_url, what="the progress page")
    browser.execute_script("document.documentElement.dataset.sameDocument = 'yes';")

    def progress() -> list[str]:
        found: list[str] = browser.execute_script(
            "const e = document.getElementById('progress');"
            "return [e.dataset.status, e.dataset.position, e.dataset.total];"
        )
        return found

    first = progress()
    assert first[2] == "6"
    wait_until(lambda: progress()[0] == "done", what="the redrive done")
    assert progress() == ["done", "6", "6"]
    assert browser.execute_script("return document.documentElement.dataset.sameDocument") == "yes"
    assert browser.find_element(By.CSS_SELECTOR, "[data-redriven]").text == "6"
    assert_accessible(browser)
    wait_until(lambda: all(status_is(db, s, "applied") for s in ids), what="redriven, applied")
    assert status_is(db, other, "dead"), "outside the filter"


def test_stats_page_shows_success_by_attempt_and_failures(
    browser, admin_ui, login_as, pipeline, db, dsn
):
    add_flag(db, "ok.flag")
    add_flag(db, "locked.stats")
    fine = add_schedule(db, "ok.flag", {"enabled": True})
    missing = add_schedule(db, "missing.flag", {"enabled": True})
    _, release = hold_flag_lock(dsn, "locked.stats")
    try:
        locked = add_schedule(db, "locked.stats", {"enabled": True}, retry_policy={"base_s": 0.3})
        wait_until(lambda: len(attempts(db, locked)) >= 1, what="a failed attempt")
    finally:
        release()
    wait_until(
        lambda: (
            all(status_is(db, s, "applied") for s in (fine, locked))
            and status_is(db, missing, "dead")
        ),
        what="all finished",
    )
    login_as("viewer")
    browser.get(f"{admin_ui.url}/ui/stats")
    first = browser.find_element(By.CSS_SELECTOR, "table.success tr[data-attempt='1']")
    assert first.text.split()[:3] == ["1", "3", "1"]  # tried 3, applied 1
    suggestion = browser.find_element(By.ID, "suggestion")
    assert suggestion.get_attribute("data-max-retries") == str(len(attempts(db, locked)) - 1)
    classes = [r.get_attribute("data-class") for r in css(browser, "table.failures tr[data-class]")]
    assert set(classes) == {"lock_contention", "flag_not_found"}
    assert "FlagNotFound: flag <str> does not exist" in browser.page_source.replace(
        "&lt;", "<"
    ).replace("&gt;", ">")
    assert_accessible(browser)
