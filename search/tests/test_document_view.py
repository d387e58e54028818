"""The document view (/documents/<id>/?chunk=<id>) through Django's test client."""

from __future__ import annotations

import html as html_lib
import re

import pytest

from documents.models import Chunk, Source
from documents.services import document_ingest
from documents.tests.pdf_writer import make_pdf
from search.document_view import PART_CHARS, location_label

pytestmark = pytest.mark.django_db

FILLER = " ".join(f"Note {i}: a colony grows through the spring and needs room." for i in range(40))
GUIDE = f"""# Keeping bees

## Hives

A hive needs shade in the afternoon and shelter from the wind. {FILLER}

## Honey

Harvest honey in late summer, once the bees have capped the cells with wax. {FILLER}
"""


@pytest.fixture
def reader(client, django_user_model, settings):
    settings.SEARCH_PUBLIC = False
    client.force_login(django_user_model.objects.create_user("reader", password="pw"))
    return client


@pytest.fixture
def source(db):
    return Source.objects.create(name="handbook")


def marked(html: str) -> str:
    match = re.search(r'<mark id="hit" class="hit" tabindex="-1">(.*?)</mark>', html, re.S)
    assert match, "no highlighted passage"
    return html_lib.unescape(match.group(1))


def test_the_hit_chunk_is_highlighted_with_its_heading_path(reader, source):
    document = document_ingest(source=source, text=GUIDE, mime="text/markdown", title="Keeping bees").document
    chunk = next(c for c in document.chunks.all() if "Harvest honey" in c.text)
    response = reader.get(f"/documents/{document.pk}/", {"chunk": str(chunk.pk)})
    assert response.status_code == 200
    html = response.content.decode()
    assert marked(html) == chunk.text
    assert '<span id="hit-path">Honey</span>' in html
    assert "A hive needs shade" in html  # the text around the hit is there too
    assert "Open the original" not in html  # sent as text: there is no original


def test_a_pdf_hit_shows_its_page_and_links_the_original_at_that_page(reader, source, settings, tmp_path):
    settings.FILES_DIR = tmp_path / "files"
    filler = "The orchard keeper walks the rows and notes every tree that needs care this season."
    pages = [[f"Page {n} line {i}: {filler}" for i in range(30)] for n in (1, 2)]
    pages.append(["Cider apples ripen in October and are pressed within a week of picking."])
    pdf = make_pdf(pages)
    document = document_ingest(source=source, data=pdf, filename="orchard.pdf", keep_file=True).document
    chunk = next(c for c in document.chunks.all() if "Cider apples" in c.text)
    page = chunk.metadata["page"]
    assert page >= 2 and chunk.metadata.get("pages", [page])[-1] == 3
    label = location_label(document.mime_type, chunk.metadata)

    html = reader.get(f"/documents/{document.pk}/", {"chunk": str(chunk.pk)}).content.decode()
    assert "Cider apples ripen in October" in marked(html)
    assert f'<span id="hit-page">{label}</span>' in html
    assert f'href="/api/documents/{document.pk}/file#page={page}"' in html
    assert "Open the original (orchard.pdf) at " + label in html
    assert "· PDF ·" in html and "application/pdf ·" not in html  # the type as a reader names it


def test_a_word_document_is_named_so_and_a_failed_one_says_why(reader, source):
    from documents.models import Document
    from documents.tests import format_fixtures as ff

    docx = ff.make_docx(title="Travel policy", sections=[(1, "Hotels", ["Book hotels through the portal."])])
    document = document_ingest(source=source, data=docx, filename="travel.docx").document
    html = reader.get(f"/documents/{document.pk}/").content.decode()
    assert "Word document ·" in html and "officedocument" not in html

    Document.objects.filter(pk=document.pk).update(status=Document.Status.FAILED, error="OCR timed out on page 2.")
    html = reader.get(f"/documents/{document.pk}/").content.decode()
    assert "failed: OCR timed out on page 2." in html


def test_location_labels_name_pages_and_slides():
    pptx = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
    assert location_label("application/pdf", {"page": 12}) == "p. 12"
    assert location_label("application/pdf", {"page": 3, "pages": [3, 4]}) == "pp. 3\u20134"
    assert location_label(pptx, {"page": 4}) == "slide 4"
    assert location_label("text/plain", {}) == "" and location_label("text/plain", {"page": "7"}) == ""


def test_a_long_document_renders_one_bounded_part_around_the_hit(reader, source):
    paragraphs = [f"Paragraph {i} of the long ledger records the hive weights of week {i}." for i in range(20_000)]
    paragraphs[15_000] = "The queen was replaced in the spring of the drought year."
    text = "\n\n".join(paragraphs)  # ~1.4 MB
    document = document_ingest(source=source, text=text, title="Ledger").document
    chunk = Chunk.objects.get(document=document, text__contains="queen was replaced")

    response = reader.get(f"/documents/{document.pk}/", {"chunk": str(chunk.pk)})
    html = response.content.decode()
    assert "The queen was replaced" in marked(html)
    assert len(response.content) < PART_CHARS * 2 + 20_000  # not the whole 1.4 MB
    assert "Paragraph 0 of" not in html and "Paragraph 19999 of" not in html
    earlier = re.search(r'href="(\?[^"]+)" rel="prev"', html).group(1)
    later = re.search(r'href="(\?[^"]+)" rel="next"', html).group(1)

    # Paging on: the next part follows on from this one, without the hit, just as bounded.
    nxt = reader.get(f"/documents/{document.pk}/" + html_lib.unescape(later))
    assert 'id="hit"' not in nxt.content.decode() and len(nxt.content) < PART_CHARS * 2 + 20_000
    last_shown = re.findall(r"Paragraph (\d+) of", html)[-1]
    first_next = re.findall(r"Paragraph (\d+) of", nxt.content.decode())[0]
    assert int(first_next) <= int(last_shown) + 1
    assert "show it" in nxt.content.decode()  # a way back to the hit
    prev = reader.get(f"/documents/{document.pk}/" + html_lib.unescape(earlier)).content.decode()
    assert 'rel="prev"' in prev and "The queen was replaced" not in prev


def test_document_text_is_escaped(reader, source):
    document = document_ingest(source=source, text="Bees <script>alert(1)</script> make <b>honey</b>.").document
    html = reader.get(f"/documents/{document.pk}/").content.decode()
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_anonymous_visitors_log_in_first_and_unknown_ids_are_404(client, source, settings):
    settings.SEARCH_PUBLIC = False
    document = document_ingest(source=source, text="Bees keep the hive warm.").document
    response = client.get(f"/documents/{document.pk}/")
    assert response.status_code == 302 and response["Location"].startswith("/login/?next=")
    settings.SEARCH_PUBLIC = True
    assert client.get(f"/documents/{document.pk}/").status_code == 200
    for missing in ("999999", "abc", "99999999999999999999999"):
        assert client.get(f"/documents/{missing}/").status_code == 404
    gone = client.get(f"/documents/{document.pk}/", {"chunk": "6f1c9f0e-3b7a-4c1e-9d0e-2a1b3c4d5e6f"})
    assert gone.status_code == 200 and "no longer in this document" in gone.content.decode()
    assert client.get(f"/documents/{document.pk}/", {"chunk": "nonsense", "at": "-5"}).status_code == 200
