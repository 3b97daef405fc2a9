"""OIDC login (authorization code + PKCE) in a real browser against a real loopback
provider on another site: the session cookie set on the callback survives the
SameSite=Strict rule, the role comes from the id token, and a replayed callback or a
login started in another browser is refused."""

from __future__ import annotations

import socket

import httpx
import pytest
from selenium.webdriver.common.by import By

from tests.support.admin import running_admin
from tests.support.browser import assert_accessible
from tests.support.oidc_provider import running_provider
from tests.support.pipeline import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_oidc_login_with_pkce_and_a_replayed_callback_is_refused(browser, settings, tmp_path):
    port = _free_port()
    with running_provider() as idp:
        ui_url = f"http://127.0.0.1:{port}"
        with running_admin(
            settings,
            tmp_path,
            admin_port=port,
            admin_oidc_issuer=idp.issuer,
            admin_oidc_jwks_url=idp.issuer + "/jwks",
            admin_ui_oidc_client_id=idp.client_id,
            admin_ui_oidc_authorize_url=idp.issuer + "/authorize",
            admin_ui_oidc_token_url=idp.issuer + "/token",
            admin_ui_oidc_redirect_url=ui_url + "/ui/login/callback",
        ):
            browser.get(ui_url + "/ui/login")
            assert_accessible(browser)
            browser.find_element(By.LINK_TEXT, "Log in with single sign-on").click()
            wait_until(
                lambda: browser.find_elements(By.CSS_SELECTOR, "form[action='/ui/logout']"),
                timeout_s=20,
                what="logged in through the provider",
            )
            assert browser.current_url == ui_url + "/ui/"
            assert "oidc:alice" in browser.find_element(By.CSS_SELECTOR, "header .who").text
            assert "operator" in browser.find_element(By.CSS_SELECTOR, "header .who").text
            asked = idp.authorize_requests[-1]
            assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) == 43
            assert "code_verifier" in idp.token_requests[-1]
            cookie = next(c for c in browser.get_cookies() if c["name"].endswith("session"))
            assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == (
                True,
                True,
                "Strict",
            )

            # The same state again (a replayed or stolen callback URL) is refused.
            state = asked["state"]
            with httpx.Client(base_url=ui_url) as stranger:
                replay = stranger.get("/ui/login/callback", params={"code": "x", "state": state})
                assert replay.status_code == 401 and "unknown or expired" in replay.text
                # A login begun in one client and finished in another lacks the binding.
                begun = stranger.get("/ui/login/oidc")
                assert begun.status_code == 302
                location = httpx.URL(begun.headers["location"])
                went = httpx.get(str(location), follow_redirects=False)
                callback = httpx.URL(went.headers["location"])
            with httpx.Client(base_url=ui_url) as other_browser:
                crossed = other_browser.get(callback.path, params=dict(callback.params))
            assert crossed.status_code == 401 and "another browser" in crossed.text
