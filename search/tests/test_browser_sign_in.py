"""The sign-in page in a real browser (Debian's Chromium through Playwright): an anonymous visitor
lands on it, in the search page's look, signs in and is on the search page; signs out again.

With SCREENSHOTS_DIR set, the page is saved there at 1280 and 390 px wide as signin-1280.png and
signin-390.png (the committed pair in docs/screenshots/ was made so).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from search.tests.test_browser import DESKTOP, PHONE, TIMEOUT_MS, browser  # noqa: F401 - browser: the fixture

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def site(live_server, settings, django_user_model):
    settings.SEARCH_PUBLIC = False
    django_user_model.objects.create_superuser("admin", "admin@example.com", "pw")
    return live_server.url


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280", "390"])
def test_an_anonymous_visitor_signs_in_on_the_apps_page_and_reaches_the_search(browser, site, viewport):  # noqa: F811
    context = browser.new_context(viewport=viewport, color_scheme="light")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("response", lambda r: r.status >= 400 and errors.append(f"{r.status} {r.url}"))

    page.goto(site + "/?q=honey")
    assert re.search(r"/login/\?next=/%3Fq%3Dhoney$", page.url), page.url
    assert page.title() == "Sign in · ragsite"
    assert page.locator("h1").inner_text() == "Sign in"
    assert page.locator(".brand").inner_text() == "ragsite"
    assert "Django administration" not in page.content()
    # The search page's stylesheet is applied: its background and the card around the form.
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(247, 247, 245)"
    assert page.locator(".sign-in-card").evaluate("el => getComputedStyle(el).borderRadius") == "10px"
    assert "createsuperuser" in page.locator("#access-heading + p + p").inner_text()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # nothing wider than a phone
    assert page.locator("#id_username").evaluate("el => el === document.activeElement")
    if os.environ.get("SCREENSHOTS_DIR"):
        folder = Path(os.environ["SCREENSHOTS_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / f"signin-{viewport['width']}.png"), full_page=True)

    page.fill("#id_username", "admin")
    page.fill("#id_password", "pw")
    page.click("#sign-in-button")
    page.wait_for_url(re.compile(r".*/\?q=honey$"))
    assert page.locator("#q").input_value() == "honey"
    assert page.locator("#signed-in-as").inner_text() == "admin"
    assert page.locator("#admin-link").get_attribute("href") == "/admin/"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # the header fits

    page.click("#sign-out")
    page.wait_for_url(re.compile(r".*/login/$"))
    assert page.locator(".note").inner_text() == "You are signed out."
    page.goto(site + "/")
    assert page.url.endswith("/login/?next=/")
    assert errors == []
    context.close()


def test_a_long_username_wraps_in_the_header_on_a_phone(browser, site, django_user_model):  # noqa: F811
    name = "margaret_hamilton_apollo_guidance_computer"  # no break opportunity in it
    django_user_model.objects.create_user(name, password="pw")
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(site + "/login/")
    page.fill("#id_username", name)
    page.fill("#id_password", "pw")
    page.click("#sign-in-button")
    page.wait_for_url(re.compile(r".*/$"))
    assert page.locator("#signed-in-as").inner_text() == name
    assert page.locator("#sign-out").is_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    context.close()
