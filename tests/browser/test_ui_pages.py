"""The overview and schedule pages in a real browser over real data: counts by status
(retrying first), the backlog, the breaker from the control topic, the per-minute
chart, the latest dead letters; hostile strings from the database shown as text; the
filters in the URL; and axe-core finds no serious or critical violation on any page."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from selenium.webdriver.common.by import By

from flagsched.schemas.events import BreakerState, ControlEvent
from tests.support.browser import assert_accessible, console_errors
from tests.support.notify import publish
from tests.support.pipeline import add_flag, add_schedule, seconds_from_now, wait_until
from tests.support.ui_data import add_dead

pytestmark = [pytest.mark.integration, pytest.mark.browser]

HOSTILE = '<script>document.title="pwned"</script><img src=x onerror=alert(1)>'


def _seed(db):
    add_flag(db, "web.checkout")
    for i in range(3):
        add_schedule(db, "web.checkout", {"enabled": True}, at=seconds_from_now(600 + i))
    retrying = add_schedule(db, "web.checkout", {"rollout_percentage": 50})
    db.execute(
        "UPDATE flag_schedules SET status = 'retrying', retry_count = 1,"
        " next_retry_at = now() + interval '40 seconds', dispatched_at = now(),"
        " first_failed_at = now(), last_error = %s, last_error_class = 'lock_contention'"
        " WHERE id = %s",
        (HOSTILE, retrying),
    )
    dead = add_dead(db, "web.checkout", 2, error_class="flag_not_found", message=HOSTILE)
    applied = add_schedule(db, "web.checkout", {"enabled": False})
    db.execute(
        "INSERT INTO schedule_retry_attempts (schedule_id, attempt, started_at, finished_at,"
        " outcome) VALUES (%s, 1, now(), now(), 'applied')",
        (applied,),
    )
    db.execute(
        "INSERT INTO schedule_retry_attempts (schedule_id, attempt, started_at, finished_at,"
        " outcome, error_class, error_message, next_attempt_at)"
        " VALUES (%s, 1, now(), now(), 'retry', 'lock_contention', 'lock timeout', now())",
        (retrying,),
    )
    return retrying, dead


def test_the_overview_shows_the_state_and_escapes_what_the_database_says(
    browser, admin_ui, login_as, db, settings
):
    _, dead = _seed(db)
    publish(
        settings,
        settings.topic_layout().control,
        [
            ControlEvent(
                state=BreakerState.OPEN, worker_id="w-1", reason=HOSTILE, at=datetime.now(UTC)
            )
            .model_dump_json()
            .encode()
        ],
        key=b"w-1",
    )
    login_as("viewer")
    cards = browser.find_elements(By.CSS_SELECTOR, "[data-status-count]")
    assert cards[0].get_attribute("data-status-count") == "retrying"  # first-class, first
    counts = {c.get_attribute("data-status-count"): c.text for c in cards}
    assert counts | {} == {
        "retrying": "1",
        "pending": "4",
        "dispatched": "0",
        "applied": "0",
        "dead": "2",
        "cancelled": "0",
        "superseded": "0",
    }
    main = browser.find_element(By.ID, "main").text
    assert "1 retrying;" in main and "2 s tier 1" in main  # 40 s left: the 2 s tier (test tiers)
    desc = browser.find_element(By.CSS_SELECTOR, "svg.chart desc").get_attribute("textContent")
    assert "1 applied, 3 failed" in desc  # one retry and the two dead attempts
    wait_until(lambda: "open" in browser.find_element(By.ID, "breaker").text, what="breaker")
    assert "w-1" in browser.find_element(By.ID, "breaker").text
    # The hostile strings are shown as text: nothing ran, no element was injected.
    assert HOSTILE in browser.find_element(By.ID, "main").text
    assert browser.title.startswith("Overview")
    assert browser.find_elements(By.CSS_SELECTOR, "main img, main script") == []
    links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "main td a")]
    assert any(h.endswith(f"/ui/flags/web.checkout/schedules/{dead[-1]}") for h in links)
    assert not [e for e in console_errors(browser) if "Failed to load resource" not in e]
    assert_accessible(browser)


def test_the_schedules_filters_live_in_the_url_and_bad_ones_name_their_field(
    browser, admin_ui, login_as, db
):
    retrying, _ = _seed(db)
    login_as("operator")
    browser.get(admin_ui.url + "/ui/schedules?status=retrying&flag_key=web.checkout")
    rows = browser.find_elements(By.CSS_SELECTOR, "tr[data-schedule]")
    assert [r.get_attribute("data-schedule") for r in rows] == [str(retrying)]
    assert HOSTILE in rows[0].text
    selected = browser.find_elements(By.CSS_SELECTOR, "select[name=status] option:checked")
    assert [o.get_attribute("value") for o in selected] == ["retrying"]
    assert browser.find_element(By.NAME, "flag_key").get_attribute("value") == "web.checkout"
    assert browser.find_elements(By.CSS_SELECTOR, "[data-action='schedules.bulk_cancel']")
    assert_accessible(browser)

    browser.get(admin_ui.url + "/ui/schedules?status=bogus&due_after=yesterday")
    alert = browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    assert "status" in alert and "due_after" in alert
    assert_accessible(browser)


def test_the_login_and_error_pages_are_accessible(browser, admin_ui, login_as):
    browser.get(admin_ui.url + "/ui/login")
    assert_accessible(browser)
    login_as("viewer")
    browser.get(admin_ui.url + "/ui/bulk-actions/999")
    assert (
        browser.find_element(By.CSS_SELECTOR, "[data-status]").get_attribute("data-status") == "404"
    )
    assert_accessible(browser)
