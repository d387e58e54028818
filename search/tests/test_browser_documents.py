"""The document view and the upload of many files, in a real browser (Debian's Chromium through Playwright).

With SCREENSHOTS_DIR set, screenshots of both at 1280 and 390 px wide go there (docs/screenshots/
holds the committed ones, shown in the README).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from documents.models import Document, Source
from documents.services import document_ingest
from search.tests.test_browser import DESKTOP, PHONE, TIMEOUT_MS, browser, log_in  # noqa: F401 - browser: the fixture

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def screenshot(page, name: str, **options) -> None:
    """Saved only with SCREENSHOTS_DIR set (`SCREENSHOTS_DIR=docs/screenshots`): a test run leaves the checkout alone."""
    folder = os.environ.get("SCREENSHOTS_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), **options)


FILLER = "the keeper notes each tree that needs pruning."


def orchard_pdf() -> bytes:
    """Three pages written with fpdf2, 30 lines each; the quince passage is two thirds down page 2."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_title("Orchard notes")
    pdf.set_font("Helvetica", size=11)
    pages = [
        [f"Row {i}: {FILLER}" for i in range(30)],
        [f"Row {i}: {FILLER}" for i in range(30, 50)]
        + ["Quince trees bloom late; their fruit makes the best marmalade after the first frost."]
        + [f"Row {i}: {FILLER}" for i in range(50, 59)],
        [f"Row {i}: {FILLER}" for i in range(60, 90)],
    ]
    for lines in pages:
        pdf.add_page()
        for line in lines:
            pdf.cell(0, 8, line, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


@pytest.fixture
def site(live_server, fresh_store, settings, django_user_model, tmp_path):
    settings.SEARCH_PUBLIC = False
    settings.FILES_DIR = tmp_path / "files"
    django_user_model.objects.create_superuser("admin", "admin@example.com", "pw")
    return live_server.url


def watch_errors(page) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("response", lambda r: r.status >= 400 and errors.append(f"{r.status} {r.url}"))  # the icon included
    return errors


def hit_in_view(page) -> bool:
    return page.evaluate(
        """() => {
            const box = document.getElementById('hit').getBoundingClientRect();
            return box.top >= 0 && box.top < window.innerHeight;
        }"""
    )


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280", "390"])
def test_a_pdf_hit_opens_the_document_view_at_the_highlighted_passage_and_its_page(browser, site, viewport):  # noqa: F811
    source = Source.objects.create(name="orchard")
    document = document_ingest(
        source=source, data=orchard_pdf(), filename="orchard-notes.pdf", mime="application/pdf", keep_file=True
    ).document
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors = watch_errors(page)
    log_in(page, site)

    page.fill("#q", "quince marmalade frost")
    page.check("input[name=mode][value=keyword]")
    page.click("#search-button")
    first = page.locator(".result").first
    assert first.locator("h3 a").inner_text() == "Orchard notes"  # the PDF's own title, not its file name
    first.locator("h3 a").click()

    page.wait_for_url(re.compile(rf".*/documents/{document.pk}/\?chunk=.*#hit$"))
    hit = page.locator("mark#hit")
    assert "Quince trees bloom late" in hit.inner_text()
    assert hit_in_view(page)
    assert page.locator("#hit-page").inner_text() == "p. 2"
    original = page.locator("#original")
    assert original.get_attribute("href") == f"/api/documents/{document.pk}/file#page=2"
    assert "orchard-notes.pdf" in original.inner_text()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, f"document-view-{viewport['width']}.png")

    # The original is the uploaded PDF, served with its type.
    response = page.request.get(site + f"/api/documents/{document.pk}/file")
    assert response.status == 200 and response.headers["content-type"] == "application/pdf"
    assert response.body().startswith(b"%PDF")
    assert errors == []
    context.close()


def drop_files(page, selector: str, files: list[tuple[str, str, str]]) -> None:
    """Drop files on an element as a person dragging them from a file manager would."""
    transfer = page.evaluate_handle(
        """(files) => {
            const transfer = new DataTransfer();
            for (const [name, type, text] of files) transfer.items.add(new File([text], name, { type }));
            return transfer;
        }""",
        files,
    )
    page.dispatch_event(selector, "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280", "390"])
def test_dropping_three_files_uploads_each_and_shows_them_indexed(browser, site, viewport, tmp_path):  # noqa: F811
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors = watch_errors(page)
    log_in(page, site)
    assert page.locator("#upload").get_attribute("open") is None
    drop_files(
        page,
        "#drop-zone",
        [
            (
                "tides.md",
                "text/markdown",
                "# Ocean tides\n\nThe moon pulls the sea into two bulges, so most coasts see two high tides a day.",
            ),
            ("sourdough.txt", "text/plain", "Sourdough starter is flour and water fermented by wild yeast."),
            (
                "volcanoes.html",
                "text/html",
                "<html><head><title>Volcanoes</title></head><body><p>Magma rises "
                "through the crust and erupts as lava.</p></body></html>",
            ),
        ],
    )
    assert page.locator("#upload").get_attribute("open") is not None  # dragging files in opened it
    items = page.locator("#upload-list .upload-item")
    items.nth(2).wait_for()
    for i in range(3):
        items.nth(i).and_(page.locator("[data-state=indexed]")).wait_for(timeout=TIMEOUT_MS)
    statuses = items.locator(".upload-status").all_inner_texts()
    assert all(re.fullmatch(r"indexed \d+ chunks?", s) for s in statuses), statuses
    assert items.locator(".upload-name a").all_inner_texts() == ["Ocean tides", "sourdough", "Volcanoes"]

    # Through the file input too: the same file again is unchanged, an unreadable one is refused with its reason.
    junk = tmp_path / "photo.bin"
    junk.write_bytes(bytes(range(256)) * 64)
    again = tmp_path / "sourdough.txt"
    again.write_text("Sourdough starter is flour and water fermented by wild yeast.")
    page.set_input_files("#upload-files", [str(again), str(junk)])
    items.nth(4).wait_for()
    unchanged, refused = items.nth(3), items.nth(4)
    unchanged.and_(page.locator("[data-state=unchanged]")).wait_for()
    refused.and_(page.locator("[data-state=refused]")).wait_for()
    assert refused.locator(".upload-status").inner_text().startswith("refused: ")
    assert len(refused.locator(".upload-status").inner_text()) > len("refused: ") + 10
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, f"upload-{viewport['width']}.png", full_page=True)

    assert Document.objects.filter(source__name="uploads").count() == 3
    assert all(d.file_sha256 for d in Document.objects.filter(source__name="uploads"))
    # The refused upload's 400 is the only failed request.
    assert [e for e in errors if "/api/documents/" not in e or not e.startswith("400 ")] == []
    context.close()


# Each text of the header on one line: the number of distinct line tops its characters sit on.
HEADER_TEXT_LINES = """() => [...document.querySelectorAll('header.top a, header.top button, header.top .who')].map((el) => {
    const range = document.createRange();
    range.selectNodeContents(el);
    const tops = new Set([...range.getClientRects()].filter((r) => r.width > 0).map((r) => Math.round(r.top)));
    return [el.textContent.trim(), tops.size];
})"""


@pytest.mark.parametrize("username", ["admin", "a-rather-long-username"])
def test_on_a_phone_the_document_header_breaks_no_word(browser, site, django_user_model, username):  # noqa: F811
    if username != "admin":
        django_user_model.objects.create_superuser(username, "long@example.com", "pw")
    document = document_ingest(source=Source.objects.create(name="notes"), title="Tides", text="High water.").document
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors = watch_errors(page)
    page.goto(site + "/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "pw")
    page.click("#sign-in-button")
    page.wait_for_url(re.compile(r".*/$"))
    page.goto(site + f"/documents/{document.pk}/")
    page.locator("#doc-title").wait_for()
    lines = page.evaluate(HEADER_TEXT_LINES)
    screenshot(page, f"document-header-{username}-390.png")
    assert [text for text, _ in lines] == ["ragsite", "Search", "API", "Admin", username, "Sign out"]
    assert [text for text, count in lines if count != 1] == [], lines
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert errors == []
    context.close()
