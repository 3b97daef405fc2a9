"""The admin UI in a real browser: logging in, the session cookie, the CSP, and who
may do what (a viewer sees no action buttons; forged and token-less POSTs get 403)."""

from __future__ import annotations

import http.server
import os
import threading
import time

import httpx
import pytest
from selenium.webdriver.common.by import By

from flagsched.admin.service.tokens import read_file
from tests.support.browser import console_errors
from tests.support.pipeline import add_flag, add_schedule, seconds_from_now, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.browser]

#: A same-origin POST from the page (what a forged or scripted request can do at best).
_POST = """
const [url, fields, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
fetch(url, {method: "POST", body: new URLSearchParams(fields), redirect: "manual"})
  .then(r => r.text().then(t => done({status: r.status, body: t})))
  .catch(e => done({status: -1, body: String(e)}));
"""


def _csrf(browser):
    return browser.find_element(By.CSS_SELECTOR, "input[name=csrf_token]").get_attribute("value")


def test_a_token_logs_in_with_a_strict_session_cookie_and_a_bad_one_does_not(
    browser, admin_ui, login_as
):
    browser.get(admin_ui.url + "/ui/schedules")
    assert "/ui/login" in browser.current_url  # not logged in: to the login, and back after
    browser.find_element(By.ID, "token").send_keys("fsa_0000_not-a-token")
    browser.find_element(By.CSS_SELECTOR, "form[action='/ui/login'] button").click()
    assert "not valid" in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    assert not [c for c in browser.get_cookies() if "session" in c["name"]]

    login_as("operator")
    cookie = next(c for c in browser.get_cookies() if c["name"] == "__Host-flagsched_session")
    assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == (True, True, "Strict")
    assert "token:operator" in browser.find_element(By.CSS_SELECTOR, "header .who").text
    assert browser.execute_script("return document.cookie") == ""  # HttpOnly: no script sees it
    assert not [e for e in console_errors(browser) if "Failed to load resource" not in e]

    browser.find_element(By.CSS_SELECTOR, "form[action='/ui/logout'] button").click()
    browser.get(admin_ui.url + "/ui/")
    assert "/ui/login" in browser.current_url


def test_deleting_a_token_ends_the_sessions_it_opened(browser, admin_ui, login_as, tmp_path):
    login_as("admin")
    browser.get(admin_ui.url + "/ui/schedules")
    assert "/ui/login" not in browser.current_url
    path = tmp_path / "tokens.json"
    tokens = read_file(path)
    tokens.tokens = [t for t in tokens.tokens if t.role != "admin"]
    path.write_text(tokens.model_dump_json(), "utf-8")
    os.utime(path, (time.time() + 5, time.time() + 5))  # a new mtime even within one tick
    browser.get(admin_ui.url + "/ui/schedules")
    assert "/ui/login" in browser.current_url


def test_every_ui_response_carries_the_csp_and_refuses_framing(admin_ui):
    with httpx.Client(base_url=admin_ui.url) as client:
        for path in ("/ui/login", "/ui/static/htmx.min.js"):
            headers = client.get(path).headers
            csp = headers["content-security-policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
            assert headers["x-frame-options"] == "DENY"
        # the API keeps its JSON problems; the UI's own refusals are HTML
        assert client.get("/api/admin/schedules").headers["content-type"] == (
            "application/problem+json"
        )


def test_a_viewer_sees_no_action_buttons_and_a_forged_post_from_a_viewer_gets_403(
    browser, admin_ui, login_as, db
):
    add_flag(db, "team.f")
    for _ in range(3):
        add_schedule(db, "team.f", {"enabled": True}, at=seconds_from_now(3600))
    login_as("viewer")
    browser.get(admin_ui.url + "/ui/schedules?status=pending&flag_prefix=team.")
    rows = browser.find_elements(By.CSS_SELECTOR, "tr[data-schedule]")
    assert len(rows) == 3
    assert browser.find_elements(By.CSS_SELECTOR, "[data-action]") == []
    # The viewer's own session and CSRF token, posting what an operator's button would:
    forged = browser.execute_async_script(
        _POST,
        "/ui/bulk-actions",
        {"csrf_token": _csrf(browser), "action": "cancel", "status": "pending"},
    )
    assert forged["status"] == 403, forged
    assert "may not" in forged["body"]
    statuses = {r["status"] for r in db.execute("SELECT status FROM flag_schedules")}
    assert statuses == {"pending"}


def test_a_post_without_the_csrf_token_or_from_another_origin_is_refused(
    browser, admin_ui, login_as, db
):
    add_flag(db, "f")
    add_schedule(db, "f", {"enabled": True}, at=seconds_from_now(3600))
    login_as("operator")
    browser.get(admin_ui.url + "/ui/schedules?status=pending")
    no_token = browser.execute_async_script(
        _POST, "/ui/bulk-actions", {"action": "cancel", "status": "pending"}
    )
    assert no_token["status"] == 403, no_token
    assert "CSRF" in no_token["body"]
    wrong_token = browser.execute_async_script(
        _POST, "/ui/bulk-actions", {"csrf_token": "x" * 43, "action": "cancel", "status": "pending"}
    )
    assert wrong_token["status"] == 403
    # Another origin with the very session cookie and token is refused by the Origin check.
    session = next(c["value"] for c in browser.get_cookies() if c["name"].endswith("session"))
    with httpx.Client(base_url=admin_ui.url, cookies={"__Host-flagsched_session": session}) as c:
        answer = c.post(
            "/ui/bulk-actions",
            data={"csrf_token": _csrf(browser), "action": "cancel", "status": "pending"},
            headers={"Origin": "https://evil.example"},
        )
    assert answer.status_code == 403 and "Origin" in answer.text
    assert db.execute("SELECT status FROM flag_schedules").fetchone()["status"] == "pending"


def test_a_cross_site_form_posted_by_another_page_is_refused(browser, admin_ui, login_as, db):
    add_flag(db, "f")
    add_schedule(db, "f", {"enabled": True}, at=seconds_from_now(3600))
    login_as("operator")
    page = f"""<!doctype html><html lang="en"><title>prize</title><body>
<form id="f" method="post" action="{admin_ui.url}/ui/bulk-actions">
<input name="action" value="cancel"><input name="status" value="pending"></form>
<script>document.getElementById("f").submit()</script></body></html>""".encode()

    class Attacker(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        # "localhost" is another site than "127.0.0.1": the session cookie (Strict) stays
        # home, and the Origin check refuses the request anyway.
        browser.get(f"http://localhost:{server.server_address[1]}/")
        wait_until(lambda: browser.current_url.startswith(admin_ui.url), what="the form post")
        refusal = browser.find_element(By.CSS_SELECTOR, "[data-status]")
        assert refusal.get_attribute("data-status") == "403"
        assert "Origin" in refusal.text
    finally:
        server.shutdown()
        server.server_close()
    assert db.execute("SELECT status FROM flag_schedules").fetchone()["status"] == "pending"
    assert db.execute("SELECT count(*) AS n FROM admin_bulk_actions").fetchone()["n"] == 0
