"""Every new format through the real interfaces: uploaded with POST /api/documents/ (multipart) or
read by `manage.py ingest` (files and URLs), then found by keyword and by semantic search
(GET /api/search/) with its location (page or slide, heading path: sheet, chapter, heading).
Refused files get a 400 naming `file` and nothing is stored.

Fixture files are written here by the real writer libraries (documents/tests/format_fixtures.py).
"""

from __future__ import annotations

import io
from io import StringIO

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from pypdf import PdfReader, PdfWriter

from documents.models import Chunk, Document
from documents.tests import format_fixtures as ff
from documents.tests.test_api import error
from documents.tests.test_ingest_url import Server

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


# A section this long is a chunk of its own, so the short one under test is not merged with it
# (small neighbouring sections share a chunk under their common parent heading: documents.chunking).
FILLER = "This paragraph is filler about an unrelated matter, written only to take up room. " * 25


def _csv() -> bytes:
    return b"instrument;maker\nviolin;Stradivarix of Cremona\ncello;Guarnerix of Cremona\n"


# name -> (file bytes, unique word, a paraphrase without it, page of the hit, its heading path)
FILES = {
    "handbook.docx": (
        lambda: ff.make_docx(
            title="Orchard Handbook",
            sections=[
                (1, "Harvest", ["Pick the pears when they blush.", FILLER]),
                (1, "Pruning", ["Prune the zephyrwood saplings in March, before the buds of the young trees open."]),
            ],
        ),
        "zephyrwood",
        "cutting back young trees in early spring",
        None,
        ["Pruning"],
    ),
    "review.pptx": (
        lambda: ff.make_pptx(
            title="Quarterly Review",
            slides=[
                ("Kickoff", ["Welcome to the review"], ""),
                ("Budget", ["The glimmerfox project buys telescopes"], "Astronomy equipment for the observatory."),
            ],
        ),
        "glimmerfox",
        "money spent on astronomy equipment",
        2,
        ["Budget"],
    ),
    "atlas.xlsx": (
        lambda: ff.make_xlsx(
            title="Atlas",
            sheets={
                "Mountains": [["Mountain", "Height"], ["Everest", "8849 m"], ["Notes", FILLER]],
                "Rivers": [["River", "Length"], ["Danubrixa", "2850 km"], ["Nile", "6650 km"]],
            },
        ),
        "Danubrixa",
        "length of rivers in kilometres",
        None,
        ["Rivers"],
    ),
    "instruments.csv": (_csv, "Stradivarix", "stringed musical instruments and who made them", None, []),
    "bees.odt": (
        lambda: ff.make_odt(
            title="Beekeeping Notes",
            sections=[
                (1, "Garden", [FILLER]),
                (1, "Hives", ["The bumblewax frames of the beehive fill with honey in summer."]),
            ],
        ),
        "bumblewax",
        "bees making honey in hives",
        None,
        ["Hives"],
    ),
    "keeper.epub": (
        lambda: ff.make_epub(
            title="The Lighthouse Keeper",
            chapters=[
                ("The Storm", ["Waves broke over the rail all night.", FILLER]),
                ("The Rescue", ["A lantern swung from the fenwick lifeboat as the sailors were pulled from the sea."]),
            ],
        ),
        "fenwick",
        "rescuing sailors from a shipwreck",
        None,
        ["The Rescue"],
    ),
    "dessert.rtf": (
        lambda: ff.make_rtf(
            title="Recette", paragraphs=["Crème brûlée with tonkabeanix is baked custard under caramel."]
        ),
        "tonkabeanix",
        "sweet custard dessert recipe",
        None,
        [],
    ),
}


def search(api, q: str, mode: str) -> list[dict]:
    response = api.get("/api/search/", {"q": q, "mode": mode})
    assert response.status_code == 200, response.content
    return response.json()["results"]


def assert_found(api, documents: dict[str, int]) -> None:
    """Each file's unique word (keyword) and a paraphrase of it (semantic) find that file first,
    with its page and heading path."""
    for name, (_, word, paraphrase, page, heading_path) in FILES.items():
        for q, mode in ((word, "keyword"), (paraphrase, "semantic")):
            hits = search(api, q, mode)
            assert hits, (name, mode)
            top = hits[0]
            assert top["document_id"] == documents[name], (name, mode, [h["title"] for h in hits])
            assert top["page"] == page, (name, mode, top)
            assert top["heading_path"][-len(heading_path) or len(top["heading_path"]) :] == heading_path, (name, top)


def test_each_format_uploaded_through_the_api_is_found_by_keyword_and_meaning(api, fresh_store, run_commit_hooks):
    documents = {}
    with run_commit_hooks():
        for name, (make, *_) in FILES.items():
            # application/octet-stream, as browsers send for types they do not know: the bytes decide.
            upload = SimpleUploadedFile(name, make(), content_type="application/octet-stream")
            response = api.post("/api/documents/", {"file": upload, "source": "uploads"})
            assert response.status_code == 201, (name, response.content)
            documents[name] = response.json()["id"]

    assert_found(api, documents)
    assert Document.objects.get(pk=documents["review.pptx"]).title == "Quarterly Review"
    assert not Chunk.objects.exclude(index_status=Chunk.IndexStatus.INDEXED).exists()


def test_each_format_read_by_the_ingest_command_is_found_by_keyword_and_meaning(
    api, fresh_store, run_commit_hooks, tmp_path
):
    for name, (make, *_) in FILES.items():
        (tmp_path / name).write_bytes(make())
    out = StringIO()
    with run_commit_hooks():
        call_command("ingest", str(tmp_path), "--source", "folder", stdout=out, stderr=StringIO())

    assert f"{len(FILES)} created, 0 updated, 0 unchanged, 0 failed" in out.getvalue()
    documents = {d.metadata["filename"]: d.pk for d in Document.objects.filter(source__name="folder")}
    assert_found(api, documents)


def test_the_ingest_command_reads_office_files_from_urls(api, settings, run_commit_hooks, fresh_store):
    settings.CRAWL_ALLOW_PRIVATE_ADDRESSES = True
    server = Server("127.0.0.1")
    make, word, *_ = FILES["review.pptx"]
    server.routes["/decks/review"] = (
        200,
        {"Content-Type": "application/vnd.openxmlformats-officedocument.presentationml.presentation"},
        make(),
    )
    # Served with a generic type and no extension: told from its zip members.
    server.routes["/download?id=7"] = (200, {"Content-Type": "application/octet-stream"}, FILES["atlas.xlsx"][0]())
    try:
        with run_commit_hooks():
            call_command(
                "ingest", f"{server.url}/decks/review", f"{server.url}/download?id=7", "--source", "web",
                stdout=StringIO(), stderr=StringIO(),
            )  # fmt: skip
    finally:
        server.stop()

    slide = search(api, word, "keyword")[0]
    assert slide["url"] == f"{server.url}/decks/review" and slide["page"] == 2
    sheet = search(api, "Danubrixa", "keyword")[0]
    assert sheet["url"] == f"{server.url}/download?id=7" and sheet["heading_path"] == ["Rivers"]


# --- OCR: two tests only (about ten seconds a page on two shared cores) -------------------------


def test_an_uploaded_photo_of_text_is_found_by_its_words(api, fresh_store, run_commit_hooks):
    image = ff.render_text_image(["The quartermaster counted", "seventeen brass lanterns."], format="JPEG")
    # Accepted (202) and read by OCR in the task worker, which the test settings run when it commits.
    with run_commit_hooks():
        response = api.post("/api/documents/", {"file": SimpleUploadedFile("lanterns.jpg", image, "image/jpeg")})
    assert response.status_code == 202, response.content
    assert response.json()["mime_type"] == "image/jpeg"
    assert Document.objects.get(pk=response.json()["id"]).status == Document.Status.ACTIVE

    for q, mode in (("quartermaster", "keyword"), ("lanterns counted by an officer", "semantic")):
        assert search(api, q, mode)[0]["document_id"] == response.json()["id"]


def test_a_scanned_pdf_is_read_by_ocr_with_its_page_numbers(api, fresh_store, run_commit_hooks, tmp_path):
    (tmp_path / "scan.pdf").write_bytes(ff.make_scanned_pdf([["Heliotrope cellar", "inventory"], ["Marzipan ledger"]]))
    with run_commit_hooks():
        call_command("ingest", str(tmp_path), "--source", "scans", stdout=StringIO(), stderr=StringIO())

    document = Document.objects.get(source__name="scans")
    assert document.metadata["ocr_pages"] == ["1-2"]
    hit = search(api, "marzipan", "keyword")[0]
    # Two short pages are one chunk (PDF pages flow into each other): it starts on page 1 and spans both.
    assert hit["document_id"] == document.pk and hit["page"] == 1 and hit["metadata"]["pages"] == [1, 2]


# --- Refused files ------------------------------------------------------------------------------


def _encrypted_pdf() -> bytes:
    from documents.tests.pdf_writer import orchard_report_pdf

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(orchard_report_pdf())))
    writer.encrypt(user_password="open-sesame", owner_password="owner", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _zip_bomb_docx() -> bytes:
    import zipfile

    with zipfile.ZipFile(io.BytesIO(FILES["handbook.docx"][0]())) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    return ff.make_zip_bomb(members=members)


def _huge_png() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    # 50,000 x 40,000 RGB: 6 GB once decoded, 57 bytes as sent.
    header = struct.pack(">IIBBBBB", 50_000, 40_000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("name", "make", "says"),
    [
        ("broken.docx", lambda: FILES["handbook.docx"][0]()[:3000], "The DOCX file is corrupt"),
        ("locked.pdf", _encrypted_pdf, "password-protected"),
        ("bomb.docx", _zip_bomb_docx, "zip bomb"),
        ("huge.png", _huge_png, "megapixels|too large to decode"),
    ],
)
def test_unreadable_files_get_a_400_naming_the_file_and_nothing_is_stored(api, fresh_store, name, make, says):
    import re

    before = api.post("/api/documents/", {"file": SimpleUploadedFile("ok.csv", _csv()), "source": "s"})
    assert before.status_code == 201

    response = api.post("/api/documents/", {"file": SimpleUploadedFile(name, make()), "source": "s"})

    assert response.status_code == 400, response.content
    body = error(response)
    assert body["fields"] == ["file"] or "file" in body["fields"], body
    assert re.search(says, body["message"]), body
    assert list(Document.objects.values_list("pk", flat=True)) == [before.json()["id"]]
