"""A newcomer's first hour, in a real browser (Debian's Chromium through Playwright), at 1280 and 390 px.

Sign in -> drop four files on the upload page and watch them get indexed -> search the question a
new user asked ("why does seawater go up and down twice a day") -> open the hit in the document
view -> ask the same question and follow a citation. Each step's page must fit the viewport (no
sideways scrolling) and load without a failed request or a script error. With SCREENSHOTS_DIR set
(`SCREENSHOTS_DIR=docs/screenshots make test PYTEST_ARGS=-k first_hour`), each step is saved
there as first-hour-<n>-<step>-<width>.png: the README shows them.
"""

from __future__ import annotations

import re

import pytest

from search.tests.test_browser import DESKTOP, PHONE, TIMEOUT_MS, browser  # noqa: F401 - browser: the fixture
from search.tests.test_browser_documents import drop_files, hit_in_view, watch_errors
from search.tests.test_browser_documents import screenshot as save

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

QUESTION = "why does seawater go up and down twice a day"

FILES = [
    (
        "tides.txt",
        "text/plain",
        "Ocean tides\n\nThe Moon's gravity pulls the oceans into two bulges, one facing the Moon and one on "
        "the far side of the Earth. As the Earth turns, a coast passes through both bulges, so the sea rises "
        "to high water and falls to low water roughly every twelve hours and twenty-five minutes. When the Sun "
        "and the Moon line up, at new and full moon, spring tides run higher than usual.",
    ),
    (
        "sourdough.md",
        "text/markdown",
        "# Sourdough bread\n\n## The starter\n\nA **starter** is flour and water fermented by wild yeast and "
        "lactic acid bacteria. Feed it once a day and keep it at room temperature.\n\n## Baking\n\nShape the "
        "dough, let it rise overnight in a [banneton](https://example.com/banneton), and bake it in a hot "
        "Dutch oven.",
    ),
    (
        "volcanoes.html",
        "text/html",
        "<html><head><title>How volcanoes erupt</title></head><body><h1>Volcanoes</h1><p>Magma rises through "
        "cracks in the crust. As it nears the surface, dissolved gas comes out of solution and the pressure "
        "drives an eruption of lava, ash and gas.</p></body></html>",
    ),
    (
        "postgres-fts.md",
        "text/markdown",
        "# Full-text search in PostgreSQL\n\nA `tsvector` holds a document's lexemes; a `tsquery` matches "
        "them. A GIN index makes the `@@` operator fast, and `ts_rank` orders the matches.",
    ),
]


def screenshot(page, step: int, name: str, viewport: dict) -> None:
    save(page, f"first-hour-{step}-{name}-{viewport['width']}.png", full_page=True)


def fits(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def sign_in(page, url: str) -> None:
    page.goto(url + "/")
    assert "/admin/" not in page.url, "the web app signs in on its own page, not the admin's"
    assert page.locator("#id_username").is_visible()
    page.fill("#id_username", "newcomer")
    page.fill("#id_password", "first-hour-pw")
    page.locator("form button[type=submit], form input[type=submit]").first.click()
    page.wait_for_url(re.compile(r".*/$"))
    page.locator("#q").wait_for()


@pytest.fixture
def site(live_server, fresh_store, settings, django_user_model, tmp_path):
    settings.SEARCH_PUBLIC = False
    settings.FILES_DIR = tmp_path / "files"
    django_user_model.objects.create_superuser("newcomer", "newcomer@example.com", "first-hour-pw")
    return live_server.url


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280", "390"])
def test_the_first_hour(browser, site, viewport):  # noqa: F811
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors = watch_errors(page)

    # 1. Signing in: the app's own page says what the service is.
    page.goto(site + "/")
    page.locator("#id_username").wait_for()
    assert "Django administration" not in page.content()
    assert fits(page)
    save(page, f"signin-{viewport['width']}.png", full_page=True)  # the sign-in page's own test saves the same
    sign_in(page, site)

    # 2. Four files dropped on the page; each is indexed, titled by its own content.
    drop_files(page, "#drop-zone", FILES)
    items = page.locator("#upload-list .upload-item")
    items.nth(len(FILES) - 1).wait_for()
    for i in range(len(FILES)):
        items.nth(i).and_(page.locator("[data-state=indexed]")).wait_for(timeout=TIMEOUT_MS)
    assert items.locator(".upload-name a").all_inner_texts() == [
        "Ocean tides",
        "Sourdough bread",
        "How volcanoes erupt",
        "Full-text search in PostgreSQL",
    ]
    assert fits(page)
    screenshot(page, 2, "upload", viewport)

    # 3. The question a newcomer asked: the tides page first in hybrid mode, snippets without markup.
    page.fill("#q", QUESTION)
    page.check("input[name=mode][value=hybrid]")
    page.click("#search-button")
    page.wait_for_selector(".results")
    first = page.locator(".result").first
    assert first.locator("h3 a").inner_text() == "Ocean tides"
    snippets = " ".join(page.locator(".result .snippet").all_inner_texts())
    assert "**" not in snippets and "](" not in snippets and "##" not in snippets, snippets
    assert fits(page)
    screenshot(page, 3, "search", viewport)

    # 4. The hit opens in the document view, highlighted and scrolled to.
    first.locator("h3 a").click()
    page.wait_for_selector("#hit")
    page.wait_for_function("() => document.getElementById('hit').getBoundingClientRect().top < window.innerHeight")
    assert hit_in_view(page)
    assert "twelve hours" in page.locator("#hit").inner_text()
    assert fits(page)
    screenshot(page, 4, "document", viewport)

    # 5. Asking: an answer with citations; a citation leads to its passage.
    page.go_back()
    page.locator("#q").wait_for()
    page.fill("#q", QUESTION)
    page.click("#ask-button")
    page.locator("#answer-meta").filter(has_text=re.compile(r"^Quoted from the sources")).wait_for(timeout=TIMEOUT_MS)
    citation = page.locator("#answer-text a.cite").first
    citation.wait_for()
    n = citation.get_attribute("data-n")
    assert "Ocean tides" in page.locator(f"#passage-{n}").inner_text()
    citation.click()
    page.wait_for_function(
        "(id) => document.getElementById(id).classList.contains('is-highlighted')", arg=f"passage-{n}"
    )
    assert fits(page)
    screenshot(page, 5, "answer", viewport)

    assert errors == []
    context.close()
