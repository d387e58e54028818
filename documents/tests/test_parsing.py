"""parse_document: each format's title, text and sections, type detection, decoding, bad input.

Pure functions: no database.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from documents.parsers import (
    EmptyContent,
    ParseError,
    TextTooLong,
    UnreadableContent,
    UnsupportedContentType,
    content_hash,
    normalize_text,
    parse_document,
)
from documents.tests.pdf_writer import make_pdf, orchard_report_pdf

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def assert_consistent(parsed) -> None:
    assert parsed.text == normalize_text(parsed.text)
    for section in parsed.sections:
        assert parsed.text[section.char_start : section.char_end] == section.text
        assert section.text == section.text.strip()
    starts = [s.char_start for s in parsed.sections]
    assert starts == sorted(starts)


@pytest.mark.parametrize("name", ["guide.md", "notes.txt", "page.html", "orchard-report.pdf"])
def test_every_fixture_parses_to_normalised_text_with_exact_section_spans(name):
    parsed = parse_document(data=fixture_bytes(name), filename=name)

    assert parsed.sections
    assert_consistent(parsed)


# --- Markdown -----------------------------------------------------------------------------------


def test_markdown_headings_become_sections_with_heading_paths():
    parsed = parse_document(data=fixture_bytes("guide.md"), filename="guide.md")

    assert parsed.mime_type == "text/markdown"
    assert parsed.title == "Beekeeping Basics"
    assert [s.heading_path for s in parsed.sections] == [
        ["Beekeeping Basics"],
        ["Beekeeping Basics", "The Hive"],
        ["Beekeeping Basics", "The Hive", "Frames and foundation"],
        ["Beekeeping Basics", "The Hive", "Ventilation"],
        ["Beekeeping Basics", "The Colony", "Roles"],
        ["Beekeeping Basics", "Seasons"],
    ]
    assert parsed.sections[1].text.startswith("## The Hive\n\nMost beekeepers use a Langstroth hive")
    # "## The Colony" has no text of its own: it opens its child's section.
    assert parsed.sections[4].text.startswith("## The Colony\n\n### Roles\n\nA colony has one queen")
    assert all(s.page is None for s in parsed.sections)


def test_markdown_hash_lines_inside_code_fences_are_not_headings():
    parsed = parse_document(data=fixture_bytes("guide.md"), filename="guide.md")

    frames = parsed.sections[2]
    assert "# this comment is code, not a heading" in frames.text
    assert not any("this comment" in " ".join(s.heading_path) for s in parsed.sections)


def test_markdown_keeps_its_source_text_so_offsets_point_into_the_file():
    source = fixture_bytes("guide.md").decode()

    parsed = parse_document(text=source, mime="text/markdown")

    assert parsed.text == source.strip()


def test_markdown_title_comes_from_front_matter_before_the_first_h1():
    parsed = parse_document(
        text="---\ntitle: 'From Front Matter'\ntags: [a]\n---\n# Heading One\n\nBody text.\n", filename="x.md"
    )

    assert parsed.title == "From Front Matter"
    assert parsed.text == "# Heading One\n\nBody text."


def test_markdown_without_h1_takes_its_title_from_the_file_name():
    parsed = parse_document(
        text="## Setup\n\nRun the installer.\n\n## Usage\n\nStart it.", filename="getting-started.md"
    )

    assert parsed.title == "getting-started"
    assert [s.heading_path for s in parsed.sections] == [["Setup"], ["Usage"]]


def test_markdown_setext_headings_and_inline_markup_in_headings_are_understood():
    parsed = parse_document(
        text="Main **Title**\n=====\n\nIntro.\n\nThe `cli` part\n---\n\nDetails.", mime="text/markdown"
    )

    assert parsed.title == "Main Title"
    assert [s.heading_path for s in parsed.sections] == [["Main Title"], ["Main Title", "The cli part"]]


def test_markdown_text_before_the_first_heading_is_a_section_without_path():
    parsed = parse_document(text="Preface line.\n\n# Chapter\n\nBody.", mime="text/markdown")

    assert [(s.heading_path, s.text) for s in parsed.sections] == [
        ([], "Preface line."),
        (["Chapter"], "# Chapter\n\nBody."),
    ]


def test_markdown_sections_cover_every_heading_line():
    parsed = parse_document(text="## Empty\n## Full\nbody\n# Top\n## Trailing", mime="text/markdown")

    assert [(s.heading_path, s.text) for s in parsed.sections] == [
        (["Full"], "## Empty\n## Full\nbody\n# Top\n## Trailing"),
    ]


def test_markdown_of_only_a_heading_keeps_that_heading_as_its_section():
    parsed = parse_document(text="# Just a title\n", mime="text/markdown")

    assert [(s.heading_path, s.text) for s in parsed.sections] == [(["Just a title"], "# Just a title")]


# --- HTML ---------------------------------------------------------------------------------------


def test_html_main_text_keeps_headings_and_drops_navigation_footer_and_scripts():
    parsed = parse_document(data=fixture_bytes("page.html"), filename="page.html", url="https://example.com/tidepools")

    assert parsed.mime_type == "text/html"
    assert parsed.title == "Field Guide to Tidepools"
    assert parsed.metadata == {"lang": "en"}
    for boilerplate in (
        "Subscribe to our newsletter",
        "All guides",
        "Copyright",
        "Privacy policy",
        "analytics",
        "font-family",
    ):
        assert boilerplate not in parsed.text
    assert "hermit crabs and periwinkles" in parsed.text
    assert [s.heading_path for s in parsed.sections] == [
        ["Field Guide to Tidepools"],
        ["Field Guide to Tidepools", "Inhabitants"],
        ["Field Guide to Tidepools", "Inhabitants", "Sea anemones"],
        ["Field Guide to Tidepools", "Visiting safely"],
    ]
    visiting = parsed.sections[-1].text
    assert "- Walk on bare rock, not on living things.\n- Check the tide tables before you go." in visiting


def test_html_title_falls_back_to_og_title_then_first_h1():
    body = "<body><h1>Heading Title</h1><p>Some body text for the page.</p></body>"
    with_og = f'<html><head><meta property="og:title" content="Open Graph Title"></head>{body}</html>'

    assert parse_document(text=with_og, mime="text/html").title == "Open Graph Title"
    assert parse_document(text=f"<html>{body}</html>", mime="text/html").title == "Heading Title"


def test_tiny_html_page_still_yields_its_headings_without_the_navigation():
    html = (
        "<html><head><title>Tiny</title></head><body><nav><a href='/'>Home</a> <a href='/blog'>Blog</a></nav>"
        "<h1>Tiny page</h1><p>Hi there, short page.</p><h2>More</h2><p>Second part.</p>"
        "<footer>Copyright nobody</footer></body></html>"
    )

    parsed = parse_document(text=html, mime="text/html")

    assert parsed.text == "Tiny page\n\nHi there, short page.\n\nMore\n\nSecond part."
    assert [s.heading_path for s in parsed.sections] == [["Tiny page"], ["Tiny page", "More"]]
    assert_consistent(parsed)


def test_html_declared_legacy_charset_is_honoured():
    html = '<html><head><meta charset="windows-1252"><title>Caf\xe9</title></head><body><p>Cr\xe8me br\xfbl\xe9e \u2013 dessert.</p></body></html>'

    parsed = parse_document(data=html.encode("cp1252"), mime="text/html")

    assert parsed.title == "Café"
    assert parsed.text == "Crème brûlée \u2013 dessert."  # byte 0x96 is an en dash in cp1252


def test_html_with_an_xml_declaration_parses():
    html = '<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml"><head><title>X</title></head><body><p>Declared XHTML body.</p></body></html>'

    parsed = parse_document(data=html.encode(), filename="page.xhtml")

    assert parsed.text == "Declared XHTML body."


def test_html_without_any_text_is_empty():
    with pytest.raises(EmptyContent, match="No readable text"):
        parse_document(
            text="<html><head><title>T</title><script>var a = 1;</script></head><body> </body></html>", mime="text/html"
        )


# --- PDF ----------------------------------------------------------------------------------------


def test_pdf_has_one_section_per_page_with_page_numbers():
    parsed = parse_document(data=fixture_bytes("orchard-report.pdf"), filename="orchard-report.pdf")

    assert parsed.mime_type == "application/pdf"
    assert parsed.title == "Orchard Report 2024"
    assert parsed.metadata == {"pages": 3}
    assert [s.page for s in parsed.sections] == [1, 2, 3]
    assert [s.heading_path for s in parsed.sections] == [[], [], []]
    assert parsed.sections[1].text == (
        "Pest control\nCodling moth traps were checked weekly from May to August.\n"
        "Damage stayed below two percent of the harvest."
    )


def test_committed_pdf_fixture_matches_its_generator():
    assert fixture_bytes("orchard-report.pdf") == orchard_report_pdf()


def test_pdf_pages_without_text_are_skipped_but_counted():
    data = make_pdf([["First page."], [], ["Third page."]])

    parsed = parse_document(data=data, filename="scan-mix.pdf")

    assert parsed.metadata == {"pages": 3}
    assert [(s.page, s.text) for s in parsed.sections] == [(1, "First page."), (3, "Third page.")]
    assert parsed.title == "scan-mix"


def justified_pdf(paragraph: str) -> bytes:
    """A paragraph justified as word processors export it: an embedded TrueType font (DejaVu, which
    ships with matplotlib), each line a TJ array whose gaps stretch the spaces."""
    import matplotlib
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.add_font("DejaVu", "", Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf")
    pdf.add_page()
    pdf.set_font("DejaVu", "", 11)
    pdf.multi_cell(0, 5.5, paragraph, align="J")
    return bytes(pdf.output())


def test_justified_pdf_lines_keep_one_space_between_words():
    paragraph = (
        "Codling moth traps were checked weekly from May to August, and damage stayed below two "
        "percent of the harvest in every block of the orchard, the eastern slope included. "
    ) * 4

    parsed = parse_document(data=justified_pdf(paragraph), filename="justified.pdf")

    assert parsed.text.split() == paragraph.split()
    assert "  " not in parsed.text and parsed.text.count("\n") >= 4  # the page's lines, single-spaced


def test_a_hyphen_that_ends_a_pdf_line_is_kept_with_its_line_break():
    parsed = parse_document(data=make_pdf([["Forty trees of a frost-", "tolerant variety."]]), filename="plan.pdf")

    assert parsed.text == "Forty trees of a frost-\ntolerant variety."


def test_pdf_text_comes_from_pypdf_when_pdfium_cannot_open_the_file(monkeypatch, caplog):
    import pypdfium2

    def refuse(*args, **kwargs):
        raise pypdfium2.PdfiumError("Failed to load document (PDFium: Data format error).")

    monkeypatch.setattr(pypdfium2, "PdfDocument", refuse)
    parsed = parse_document(data=orchard_report_pdf(), filename="orchard-report.pdf")

    assert [s.page for s in parsed.sections] == [1, 2, 3]
    assert parsed.sections[1].text.startswith("Pest control\nCodling moth traps")
    assert "PDFium could not open orchard-report.pdf" in caplog.text


def test_pdfs_parsed_in_parallel_threads_each_get_their_own_text():
    """PDFium is not thread-safe; uploads are parsed in the server's threads (the parser's lock)."""
    from concurrent.futures import ThreadPoolExecutor

    files = {n: make_pdf([[f"File {n}, page {p}: apples and pears."] for p in range(1, 6)]) for n in range(8)}

    def pages(n: int) -> list[str]:
        return [s.text for s in parse_document(data=files[n], filename=f"{n}.pdf").sections]

    order = [n for n in files for _ in range(3)]  # each file three times, four threads at once
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(pages, order))

    assert results == [[f"File {n}, page {p}: apples and pears." for p in range(1, 6)] for n in order]


def test_pdf_without_any_text_layer_is_empty_and_says_why():
    with pytest.raises(EmptyContent, match="no extractable text"):
        parse_document(data=make_pdf([[], []]), filename="scan.pdf")


@pytest.mark.parametrize("cut", [40, 400, 1000])
def test_truncated_pdf_is_unreadable(cut):
    with pytest.raises(UnreadableContent, match="PDF is corrupt"):
        parse_document(data=orchard_report_pdf()[:cut], filename="broken.pdf")


def test_pdf_header_followed_by_garbage_is_unreadable():
    with pytest.raises(UnreadableContent, match="PDF"):
        parse_document(data=b"%PDF-1.7\n" + bytes(range(256)) * 4, mime="application/pdf")


def encrypted(data: bytes, *, user_password: str) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password="owner-secret", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_password_protected_pdf_is_unreadable():
    with pytest.raises(UnreadableContent, match="password-protected"):
        parse_document(data=encrypted(orchard_report_pdf(), user_password="open-sesame"), filename="locked.pdf")


def test_pdf_encrypted_only_against_editing_is_read():
    parsed = parse_document(data=encrypted(orchard_report_pdf(), user_password=""), filename="report.pdf")

    assert [s.page for s in parsed.sections] == [1, 2, 3]
    assert "Codling moth" in parsed.text


def test_pdf_given_as_text_is_refused():
    with pytest.raises(UnsupportedContentType, match="uploaded as a file"):
        parse_document(text="%PDF-1.4 not really", mime="application/pdf")


# --- Plain text and normalisation ---------------------------------------------------------------


def test_plain_text_is_normalised_and_titled_by_its_own_title_line():
    parsed = parse_document(data=fixture_bytes("notes.txt"), filename="notes.txt")

    assert parsed.mime_type == "text/plain"
    assert parsed.title == "Meeting notes, 14 March"
    assert "Thursdays.\nAction items:" in parsed.text  # trailing spaces dropped
    assert "contracts.\n\n\nThe next review" in parsed.text  # three blank lines became two
    assert [(s.heading_path, s.char_start, s.char_end) for s in parsed.sections] == [([], 0, len(parsed.text))]


def test_pasted_text_without_a_name_takes_its_first_short_line_as_title():
    assert parse_document(text="Quarterly summary\n\nSales rose.").title == "Quarterly summary"
    assert parse_document(text="x" * 150 + "\n\nmore").title == ""


@pytest.mark.parametrize(
    ("text", "filename", "title"),
    [
        ("Ocean tides\n\nThe sea rises and falls twice a day.", "tides.txt", "Ocean tides"),
        ("\n\nOcean tides\n\nThe sea rises.", "tides.txt", "Ocean tides"),
        ("Ocean tides\nThe sea rises and falls.", "tides.txt", "tides"),  # no blank line: not a title
        ("We met on Monday.\n\nAgreed on the plan.", "notes.txt", "notes"),  # a sentence
        ("- milk\n\n- eggs", "shopping.txt", "shopping"),  # a list item
        ("x" * 120 + "\n\nbody", "long.txt", "long"),
        ("Ocean tides\n\nBody", "", "Ocean tides"),
    ],
)
def test_a_text_file_that_names_itself_is_titled_by_its_own_first_line(text, filename, title):
    assert parse_document(text=text, filename=filename).title == title


def test_markdown_without_h1_but_with_a_title_line_is_titled_by_it():
    assert parse_document(text="Ocean tides\n\n## Why\n\nThe moon.", filename="tides.md").title == "Ocean tides"


def test_normalize_text_rules():
    raw = "\ufeffCafe\u0301  \r\nline\ttwo\t\r\r\n\n\n\n\nend\x00 \x0cpage\u2028x\n\n"

    assert normalize_text(raw) == "Café\nline\ttwo\n\n\nend\npage\nx"


@pytest.mark.parametrize(
    "text",
    ["a\n\n\n\n\nb", "  indented\n", "Cafe\u0301\r\n", "x \t\ny", "\n\n\nlead", "\x0c\x0c\x0cz", "e\u0301\u0301"],
)
def test_normalize_text_is_idempotent(text):
    once = normalize_text(text)

    assert normalize_text(once) == once


def test_content_hash_is_sha256_hex_of_utf8():
    assert content_hash("héllo") == hashlib.sha256("héllo".encode()).hexdigest()
    assert content_hash("a") != content_hash("a ")


# --- Type detection -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"mime": "text/markdown"}, "text/markdown"),
        ({"mime": "text/x-markdown; charset=utf-8"}, "text/markdown"),
        ({"mime": "text/plain", "filename": "README.md"}, "text/markdown"),  # servers label .md as text/plain
        ({"mime": "text/plain", "filename": "notes.html"}, "text/plain"),  # the declared type wins
        ({"mime": "application/octet-stream", "filename": "a.markdown"}, "text/markdown"),
        ({"filename": "a.htm"}, "text/html"),
        ({"url": "https://example.com/docs/intro.md?raw=1"}, "text/markdown"),
        ({"url": "https://example.com/index.php"}, "text/markdown"),  # unknown URL extension: sniffed
        ({"mime": "text/csv"}, "text/csv"),  # a table: documents.parsers.spreadsheet
        ({"filename": "script.py"}, "text/plain"),
        ({}, "text/markdown"),  # sniffed from the "# " heading
    ],
)
def test_content_type_comes_from_mime_then_extension_then_content(kwargs, expected):
    parsed = parse_document(data=b"# Heading\n\nSome <b>body</b> text.\n", **kwargs)

    assert parsed.mime_type == expected


def test_content_sniffing_recognises_html_pdf_and_plain_text():
    assert (
        parse_document(data=b"  <!DOCTYPE html><html><body><p>Hello page.</p></body></html>").mime_type == "text/html"
    )
    assert parse_document(data=orchard_report_pdf()).mime_type == "application/pdf"
    assert parse_document(data=b"Just a sentence.").mime_type == "text/plain"


# --- Decoding -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        "Grüße aus Köln".encode("utf-8-sig"),
        "Grüße aus Köln".encode("utf-16"),  # with byte-order mark
        "Grüße aus Köln".encode("utf-32"),
        "Grüße aus Köln".encode(),
    ],
)
def test_unicode_text_is_decoded_from_bom_or_utf8(data):
    assert parse_document(data=data, filename="greeting.txt").text == "Grüße aus Köln"


def test_declared_charset_decodes_legacy_text():
    parsed = parse_document(data="Grüße aus Köln".encode("latin-1"), mime="text/plain; charset=ISO-8859-1")

    assert parsed.text == "Grüße aus Köln"


def test_valid_utf8_wins_over_a_wrong_legacy_declaration():
    parsed = parse_document(data="Grüße".encode(), mime="text/plain; charset=iso-8859-1")

    assert parsed.text == "Grüße"


def test_undeclared_non_utf8_text_is_an_error_not_mojibake():
    with pytest.raises(UnreadableContent, match="not valid UTF-8") as excinfo:
        parse_document(data="Grüße aus Köln".encode("cp1252"), filename="legacy.txt")

    assert "charset" in excinfo.value.message


# --- Bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": b""},
        {"data": b"  \n\t\r\n "},
        {"text": ""},
        {"text": " \n\n  "},
        {"data": b"   ", "mime": "application/pdf"},
    ],
)
def test_empty_or_whitespace_input_is_empty_content(kwargs):
    with pytest.raises(EmptyContent, match="empty"):
        parse_document(**kwargs)


def test_input_that_normalises_to_nothing_is_empty_content():
    with pytest.raises(EmptyContent):
        parse_document(data="\ufeff\u00a0\u2028".encode(), mime="text/plain")


@pytest.mark.parametrize("kwargs", [{"filename": "junk.bin"}, {"mime": "text/plain"}, {}])
def test_binary_junk_is_unreadable_even_when_labelled_text(kwargs):
    with pytest.raises(UnreadableContent, match="binary data"):
        parse_document(data=fixture_bytes("junk.bin"), **kwargs)


def test_text_full_of_control_characters_is_binary():
    with pytest.raises(UnreadableContent, match="binary data"):
        parse_document(text="abc\x01\x02\x03\x04def\x05\x06" * 20)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"mime": "image/gif"}, "image/gif"),
        ({"mime": "application/zip"}, "application/zip"),
        ({"filename": "archive.zip"}, "application/zip"),
        ({"filename": "clip.mp4"}, "video/mp4"),
        ({"mime": "application/json"}, "application/json"),
    ],
)
def test_unsupported_types_are_rejected_with_the_supported_list(kwargs, named):
    with pytest.raises(UnsupportedContentType) as excinfo:
        parse_document(data=b"whatever bytes", **kwargs)

    message = excinfo.value.message
    assert named in message
    # The formats as a person knows them, by extension (the MIME types are in the API schema).
    for supported in (".txt", ".md", ".html", ".pdf", ".docx", ".pptx", ".xlsx", ".csv", ".epub", ".png"):
        assert supported in message


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"mime": "image/png"}, "a PNG image: it has no PNG signature"),
        ({"filename": "photo.jpg"}, "a JPEG image: it has no JPEG signature"),
        ({"filename": "report.docx"}, "a DOCX file: it is not a zip package"),
        ({"mime": "application/rtf"}, "an RTF file: it does not start with {\\rtf"),
    ],
)
def test_text_labelled_as_a_binary_format_is_not_parsed_as_either(kwargs, named):
    with pytest.raises(UnreadableContent, match=re.escape(f"The file is not {named} (it looks like text).")):
        parse_document(data=b"whatever bytes", **kwargs)


def test_unlabelled_image_bytes_go_to_the_image_parser_whatever_their_name():
    png = b"\x89PNG\r\n\x1a\n" + bytes(64)

    with pytest.raises(UnreadableContent, match=r"image could not be read|image is corrupt"):
        parse_document(data=png, filename="upload.txt")


def test_unsupported_binary_content_is_named_whatever_its_label():
    gif = b"GIF89a" + bytes(64)

    with pytest.raises(UnsupportedContentType, match=r"Unsupported file type \(image/gif\)"):
        parse_document(data=gif, filename="notes.txt")
    with pytest.raises(UnsupportedContentType, match="The file is not a PNG image: its content is image/gif"):
        parse_document(data=gif, filename="photo.png")


def test_every_parse_error_is_a_parse_error_with_a_message():
    for error in (EmptyContent, UnreadableContent, UnsupportedContentType):
        assert issubclass(error, ParseError)
    with pytest.raises(ParseError) as excinfo:
        parse_document(data=b"")
    assert excinfo.value.message == str(excinfo.value)


def test_data_and_text_are_mutually_exclusive():
    with pytest.raises(ValueError, match="exactly one"):
        parse_document(data=b"a", text="a")


# --- The content decides before the label -------------------------------------------------------


def zip_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("report.docx", bytes(range(256)) * 64)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"filename": "report.txt"},
        {"mime": "text/html; charset=utf-8"},
        {"mime": "text/plain", "filename": "notes.md"},
        {"mime": "text/html", "url": "https://example.com/page.html"},
        {"filename": "scan.png"},
    ],
)
def test_a_pdf_is_parsed_as_a_pdf_whatever_its_name_or_declared_type(kwargs):
    parsed = parse_document(data=orchard_report_pdf(), **kwargs)

    assert parsed.mime_type == "application/pdf"
    assert "Orchard Report 2024" in parsed.text


@pytest.mark.parametrize(
    "kwargs", [{"filename": "report.pdf"}, {"mime": "application/pdf"}, {"url": "https://x/a.pdf"}]
)
def test_a_zip_named_or_labelled_pdf_is_reported_as_not_a_pdf(kwargs):
    with pytest.raises(UnsupportedContentType, match=r"not a PDF: its content is application/zip"):
        parse_document(data=zip_archive(), **kwargs)


@pytest.mark.parametrize("kwargs", [{"filename": "notes.txt"}, {"mime": "text/html"}, {}])
def test_a_zip_labelled_as_text_is_reported_as_a_zip(kwargs):
    with pytest.raises(UnsupportedContentType, match=r"Unsupported file type \(application/zip"):
        parse_document(data=zip_archive(), **kwargs)


def test_an_html_page_served_as_a_pdf_is_not_parsed_as_either():
    login = b"<!doctype html><html><body><form>Please log in to download the report.</form></body></html>"

    with pytest.raises(UnreadableContent, match=r"not a PDF: it does not start with %PDF- \(it looks like HTML\)"):
        parse_document(data=login, mime="application/pdf", url="https://example.com/report.pdf")


@pytest.mark.parametrize("start", [b"MZ", b"ID3", b"BZh", b"RIFF", b"GIF89a"])
def test_text_that_happens_to_start_like_a_binary_format_is_still_text(start):
    parsed = parse_document(data=start + b" is how these notes begin.\n", filename="notes.txt")

    assert parsed.mime_type == "text/plain"
    assert parsed.text.startswith(start.decode())


# --- Deeply nested HTML -------------------------------------------------------------------------


def unclosed_div_blog(posts: int) -> bytes:
    body = "".join(f"<div class='post'><h2>Post {n}</h2><p>Entry number {n} of the diary.</p>" for n in range(posts))
    return f"<!doctype html><html><head><title>Diary</title></head><body>{body}</body></html>".encode()


@pytest.mark.parametrize("posts", [400, 3000])
def test_html_with_an_unclosed_div_per_post_keeps_every_post(posts):
    parsed = parse_document(data=unclosed_div_blog(posts), filename="diary.html")

    assert parsed.text.count("of the diary") == posts
    assert f"Entry number {posts - 1} of the diary." in parsed.text
    assert_consistent(parsed)


def test_html_nested_too_deep_to_read_completely_fails_clearly():
    deep = b"<html><body>" + b"<ul><li>item" * 400 + b"<p>The end of the list.</p></body></html>"

    with pytest.raises(UnreadableContent, match="nests elements more than 255 deep"):
        parse_document(data=deep, filename="deep.html")


# --- Bounded extracted text -----------------------------------------------------------------------


def pdf_listing_one_page(times: int, text: str = "The only page, listed again and again.") -> bytes:
    """A valid PDF whose page tree lists the same page object ``times`` times (about 6 bytes each)."""
    stream = b"BT /F1 11 Tf 72 740 Td (" + text.encode("latin-1") + b") Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + b" ".join([b"3 0 R"] * times) + b"] /Count %d >>" % times,
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_a_page_listed_thousands_of_times_is_extracted_once():
    data = pdf_listing_one_page(5000)
    assert len(data) < 40_000

    parsed = parse_document(data=data, filename="loop.pdf")

    assert parsed.text == "The only page, listed again and again."
    assert parsed.metadata == {"pages": 5000, "repeated_pages": ["2-5000"]}
    assert [s.page for s in parsed.sections] == [1]


def test_extracted_text_over_the_limit_is_refused_with_the_setting_named():
    data = make_pdf([[f"Page {n} has its own sentence about apples and pears."] for n in range(1, 41)])

    assert len(parse_document(data=data, filename="long.pdf").text) > 1000
    with pytest.raises(TextTooLong, match=r"longer than the limit of 1,000 characters \(INGEST_MAX_TEXT_CHARS\)"):
        parse_document(data=data, filename="long.pdf", max_chars=1000)
    with pytest.raises(TextTooLong, match=r"1,000 characters \(2,000 characters\)"):
        parse_document(data=b"x" * 2000, filename="long.txt", max_chars=1000)
    assert parse_document(data=b"x" * 1000, filename="fits.txt", max_chars=1000).text == "x" * 1000
