"""A real browser for the admin UI's tests: the system Chromium driven by Selenium
through the system ChromeDriver (headless), and axe-core (vendored from npm) run in
the page. Missing Chromium or ChromeDriver: :func:`tests.support.required.unavailable`
(a skip on a developer machine, a failure under CI=true)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.support.pipeline import wait_until
from tests.support.required import unavailable

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
#: axe impacts a page must not have.
BLOCKING = ("serious", "critical")


def _binary(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


@contextlib.contextmanager
def chrome(*, width: int = 1280, height: int = 900) -> Iterator[WebDriver]:
    """A headless system Chromium with its own profile, quit on exit."""
    binary = _binary("chromium", "chromium-browser")
    driver_path = _binary("chromedriver")
    if binary is None or driver_path is None:
        unavailable(
            "Chromium and ChromeDriver are needed (make setup installs chromium, chromium-driver)"
        )
    profile = tempfile.mkdtemp(prefix="flagsched-chrome-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    except WebDriverException as exc:
        shutil.rmtree(profile, ignore_errors=True)
        unavailable(f"Chromium did not start: {exc.msg}")
    try:
        driver.set_page_load_timeout(30)
        driver.set_script_timeout(30)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def login(driver: WebDriver, base_url: str, token: str) -> None:
    """Log in through the login form with an API token; waits for the overview."""
    driver.get(base_url + "/ui/login")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form[action='/ui/login'] button[type=submit]").click()
    wait_until(
        lambda: driver.find_elements(By.CSS_SELECTOR, "form[action='/ui/logout']"),
        timeout_s=15,
        what="the logged-in page",
    )


def axe_violations(driver: WebDriver, impacts: Sequence[str] = BLOCKING) -> list[dict[str, Any]]:
    """axe-core's violations on the current page whose impact is one of ``impacts``.

    axe is injected through WebDriver, which the page's CSP does not govern."""
    driver.execute_script(AXE.read_text("utf-8"))
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(r => done(r.violations)).catch(e => done({error: String(e)}));"
    )
    if isinstance(result, dict) and "error" in result:
        raise AssertionError(f"axe failed: {result['error']}")
    return [v for v in result if v.get("impact") in impacts]


def assert_accessible(driver: WebDriver) -> None:
    """No serious or critical axe violation on the current page (they are listed)."""
    found = axe_violations(driver)
    summary = [
        (v["id"], v["impact"], [n.get("target") for n in v.get("nodes", [])][:5]) for v in found
    ]
    assert not found, f"axe on {driver.current_url}: {summary}"


def console_errors(driver: WebDriver) -> list[str]:
    """The page's console errors (a CSP refusal shows up here)."""
    entries = driver.get_log("browser")  # type: ignore[attr-defined]  # Chrome's, not W3C's
    return [e["message"] for e in entries if e.get("level") == "SEVERE"]
