"""Bulk actions in a real browser: a filtered set of 200 dead schedules is retried in
full (not one page of 50), after a confirmation that shows the count, and the progress
view (htmx polling) reaches 200 without a reload."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from tests.support.browser import assert_accessible
from tests.support.pipeline import wait_until
from tests.support.ui_data import add_dead

pytestmark = [pytest.mark.integration, pytest.mark.browser]


@pytest.mark.admin_settings(admin_bulk_batch=20)
def test_bulk_retry_of_a_filtered_set_of_200_reaches_200(browser, admin_ui, login_as, db):
    db.execute("INSERT INTO feature_flags (key) VALUES ('team.bulk'), ('team.other')")
    targets = add_dead(db, "team.bulk", 200)
    untouched = add_dead(db, "team.other", 7) + add_dead(
        db, "team.bulk", 5, error_class="flag_not_found", message="flag 'x' does not exist"
    )
    login_as("operator")
    browser.get(admin_ui.url + "/ui/schedules")
    # Fill in the filter form: the view is then a URL that can be shared.
    browser.find_element(By.CSS_SELECTOR, "select[name=status] option[value=dead]").click()
    browser.find_element(By.NAME, "flag_prefix").send_keys("team.b")
    browser.find_element(By.NAME, "error_class").send_keys("lock_contention")
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    wait_until(lambda: "error_class=lock_contention" in browser.current_url, what="the filter URL")
    assert "status=dead" in browser.current_url and "flag_prefix=team.b" in browser.current_url
    assert len(browser.find_elements(By.CSS_SELECTOR, "tr[data-schedule]")) == 50  # one page
    assert browser.find_elements(By.CSS_SELECTOR, "a[rel=next]")
    assert_accessible(browser)

    browser.find_element(By.CSS_SELECTOR, "[data-action='schedules.bulk_retry']").click()
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "[data-count]"), what="confirm")
    assert browser.find_element(By.CSS_SELECTOR, "[data-count]").text == "200"
    assert_accessible(browser)
    browser.find_element(By.CSS_SELECTOR, "[data-action=confirm]").click()

    def progress() -> tuple[str, str]:
        # One script call: htmx replaces the section every second, so a found element
        # may be stale by the next WebDriver call.
        got = browser.execute_script(
            "const s = document.getElementById('bulk-progress');"
            "return s ? [s.dataset.status, s.innerText] : ['', ''];"
        )
        return got[0], got[1]

    wait_until(lambda: progress()[1], what="the progress view")
    first_url = browser.current_url
    wait_until(lambda: progress()[0] == "done", timeout_s=60, what="the bulk retry to finish")
    assert browser.current_url == first_url  # updated in place, no reload
    assert "200 of 200 processed" in progress()[1]
    assert browser.find_element(By.CSS_SELECTOR, "[data-field=done]").text == "200"
    assert browser.find_element(By.ID, "bulk-bar").get_attribute("value") == "200"
    assert_accessible(browser)

    rows = db.execute(
        "SELECT id, status FROM flag_schedules WHERE id = ANY(%s)", (targets + untouched,)
    ).fetchall()
    status = {r["id"]: r["status"] for r in rows}
    assert {status[i] for i in targets} == {"retrying"}  # re-opened with one more attempt
    assert {status[i] for i in untouched} == {"dead"}  # outside the filter
    audit = db.execute("SELECT action, count(*) AS n FROM admin_audit GROUP BY 1").fetchall()
    assert {a["action"]: a["n"] for a in audit} == {
        "schedules.bulk_retry": 1,
        "schedule.retry": 200,
    }
