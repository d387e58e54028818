"""A .zip dropped on the upload section, in a real browser (Debian's Chromium through Playwright):
the archive's row sums up the server's report and each file in it gets a row of its own."""

from __future__ import annotations

import io
import re
import zipfile

import pytest

from documents.models import Document
from search.tests.test_browser import DESKTOP, TIMEOUT_MS, browser, log_in  # noqa: F401 - browser: the fixture
from search.tests.test_browser_documents import site, watch_errors  # noqa: F401 - site: the fixture

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def bundle() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("guides/tides.md", "# Ocean tides\n\nThe moon pulls the sea into two bulges each day.\n")
        archive.writestr("sourdough.txt", "Sourdough starter is flour and water fermented by wild yeast.\n")
        archive.writestr("setup.exe", b"MZ\x90\x00\x03\x00\x00\x00" * 64)
        archive.writestr("__MACOSX/guides/._tides.md", b"\x00\x05\x16\x07")
    return out.getvalue()


def test_a_dropped_zip_shows_a_row_per_file_of_it(browser, site, tmp_path):  # noqa: F811
    path = tmp_path / "bundle.zip"
    path.write_bytes(bundle())
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors = watch_errors(page)
    log_in(page, site)
    page.locator("#upload summary").click()

    page.set_input_files("#upload-files", [str(path)])
    items = page.locator("#upload-list .upload-item")
    items.nth(3).wait_for()
    archive, tides, sourdough, setup = (items.nth(i) for i in range(4))
    assert archive.locator(".upload-name").inner_text() == "bundle.zip"
    assert archive.get_attribute("data-state") == "archive"
    assert archive.locator(".upload-status").inner_text() == (
        "archive of 3 files: 2 ingested, 0 unchanged, 1 refused, 1 skipped"
    )
    for row in (tides, sourdough):
        row.and_(page.locator("[data-state=indexed]")).wait_for(timeout=TIMEOUT_MS)
        assert re.fullmatch(r"indexed \d+ chunks?", row.locator(".upload-status").inner_text())
    assert tides.locator(".upload-name a").inner_text() == "Ocean tides"
    assert setup.get_attribute("data-state") == "refused"
    assert setup.locator(".upload-status").inner_text().startswith("refused: Unsupported file type")

    # The same archive again: its files are unchanged, and nothing is stored twice.
    page.set_input_files("#upload-files", [str(path)])
    items.nth(7).wait_for()
    assert items.nth(4).locator(".upload-status").inner_text().startswith("archive of 3 files: 0 ingested, 2 unchanged")
    assert [items.nth(i).get_attribute("data-state") for i in (5, 6, 7)] == ["unchanged", "unchanged", "refused"]
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    assert Document.objects.filter(source__name="uploads").count() == 2
    assert errors == []
    context.close()
