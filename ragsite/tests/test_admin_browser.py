"""The admin in a real browser (Debian's Chromium through Playwright) at 1280 px: no list or page
scrolls sideways, and a document with 300 chunks has a page of bounded height.

Screenshots of the document list and a document's page are written only when SCREENSHOTS_DIR is
set (``SCREENSHOTS_DIR=docs/screenshots pytest ragsite/tests/test_admin_browser.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.contrib import admin
from django.urls import reverse

from ragsite.tests.admin_data import admin_showcase
from search.tests.test_browser import DESKTOP, TIMEOUT_MS, browser  # noqa: F401 - browser: the fixture

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MAX_DOCUMENT_PAGE_HEIGHT = 4000

# Everything that scrolls sideways: the page itself, and any element whose overflow scrolls (the
# admin wraps its result table in one, so a too-wide table scrolls inside it, not the page).
SIDEWAYS = """() => {
    const root = document.documentElement;
    const found = root.scrollWidth > root.clientWidth ? [`page ${root.scrollWidth} > ${root.clientWidth}`] : [];
    for (const el of document.querySelectorAll('body *')) {
        const overflow = getComputedStyle(el).overflowX;
        if ((overflow === 'auto' || overflow === 'scroll') && el.scrollWidth > el.clientWidth + 1) {
            found.push(`${el.tagName.toLowerCase()}.${el.className} ${el.scrollWidth} > ${el.clientWidth}`);
        }
    }
    return found;
}"""


def screenshot(page, name: str, *, full_page: bool) -> None:
    """Into SCREENSHOTS_DIR when it is set. A whole page is shot through a window as tall as the
    page: a full-page capture would leave the admin's sticky sidebar half-way down."""
    folder = os.environ.get("SCREENSHOTS_DIR")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    viewport = page.viewport_size
    if full_page:
        page.set_viewport_size({"width": viewport["width"], "height": page.evaluate("document.body.scrollHeight")})
    page.screenshot(path=str(Path(folder) / name))
    page.set_viewport_size(viewport)


@pytest.fixture
def admin_page(browser, live_server, django_user_model):  # noqa: F811
    """A browser page at 1280 px, logged in to the admin through its login form."""
    django_user_model.objects.create_superuser("admin", "admin@example.com", "pw")
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on("response", lambda r: r.status >= 400 and page.errors.append(f"{r.status} {r.url}"))  # the icon included
    page.goto(live_server.url + reverse("admin:index"))
    page.fill("#id_username", "admin")
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    assert "ragsite administration" in page.locator("#site-name").inner_text()
    yield page
    context.close()


def test_every_change_list_fits_1280_px_without_scrolling_sideways(admin_page, live_server):
    admin_showcase()
    for model in admin.site._registry:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        admin_page.goto(live_server.url + url)
        admin_page.wait_for_selector("#changelist")
        assert admin_page.evaluate(SIDEWAYS) == [], url
    assert admin_page.errors == []


def test_the_documents_list_reads_at_a_glance(admin_page, live_server):
    admin_showcase()
    admin_page.goto(live_server.url + reverse("admin:documents_document_changelist"))
    rows = admin_page.locator("#result_list tbody tr")
    assert rows.count() > 10
    manual = rows.filter(has_text="Operations manual 2026 (PDF)")
    assert manual.locator(".rs-badge").inner_text() == "50 pending"
    assert manual.locator(".rs-progress").inner_text().split() == ["250/300"]
    # A long title is cut to one line with an ellipsis, the whole of it in the tooltip.
    long_title = rows.filter(has_text="A very long document title").first.locator("th .rs-clip")
    assert long_title.evaluate("el => el.scrollWidth > el.clientWidth")  # clipped, not wrapped
    assert long_title.evaluate("el => getComputedStyle(el).textOverflow") == "ellipsis"
    assert long_title.get_attribute("title").startswith("A very long document title that goes on")
    assert admin_page.evaluate(SIDEWAYS) == []
    screenshot(admin_page, "admin-documents-1280.png", full_page=False)
    assert admin_page.errors == []


def test_a_document_with_300_chunks_has_a_short_page(admin_page, live_server):
    rows = admin_showcase(chunks=300)
    document = rows["big_document"]
    admin_page.goto(live_server.url + reverse("admin:documents_document_change", args=[document.pk]))
    text = admin_page.locator("#content").inner_text()
    assert "300 total" in text and "250 embedded" in text and "50 pending" in text
    height = admin_page.evaluate("document.documentElement.scrollHeight")
    assert height < MAX_DOCUMENT_PAGE_HEIGHT

    # The first chunks, folded away until asked for; open, the page stays short and narrow.
    sample = admin_page.locator("details", has_text="First chunks")
    assert not sample.evaluate("el => el.open")
    sample.locator("summary").click()
    assert admin_page.locator(".rs-sample tbody tr").count() == 20
    assert "The first 20 of 300 chunks" in sample.inner_text()
    assert admin_page.evaluate(SIDEWAYS) == []
    screenshot(admin_page, "admin-document-1280.png", full_page=True)
    admin_page.get_by_text("Text", exact=True).click()  # the document's text, in a bounded box
    assert admin_page.evaluate("document.documentElement.scrollHeight") < MAX_DOCUMENT_PAGE_HEIGHT
    assert admin_page.evaluate(SIDEWAYS) == []

    # "All 300 chunks" leads to the chunk list narrowed to this document.
    admin_page.locator(".rs-sample a", has_text="All 300 chunks").click()
    admin_page.wait_for_selector("#changelist")
    assert "300 chunks" in admin_page.locator(".paginator").inner_text()
    assert admin_page.evaluate(SIDEWAYS) == []
    assert admin_page.errors == []


def test_a_crawl_job_page_with_many_pages_is_short_and_narrow(admin_page, live_server):
    admin_showcase()
    from crawl.models import CrawlJob

    job = CrawlJob.objects.filter(status=CrawlJob.Status.RUNNING).get()
    admin_page.goto(live_server.url + reverse("admin:crawl_crawljob_change", args=[job.pk]))
    for summary in admin_page.locator("details summary").all():
        summary.click()
    assert admin_page.evaluate("document.documentElement.scrollHeight") < MAX_DOCUMENT_PAGE_HEIGHT
    assert admin_page.evaluate(SIDEWAYS) == []
    assert admin_page.errors == []
