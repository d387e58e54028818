"""A minimal PDF writer for tests: real PDF files with real text streams, no dependency.

Writes one Helvetica text object per page (WinAnsi encoding, so Latin-1 text only) with a
correct cross-reference table, which pypdf reads like any producer's output.
"""

from __future__ import annotations


def _pdf_string(text: str) -> bytes:
    raw = text.encode("cp1252")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def make_pdf(pages: list[list[str]], *, title: str | None = None) -> bytes:
    """Return a PDF with one page per item of `pages`, each a list of text lines.

    An empty line list yields a page with no text (as a scanned page looks to a text extractor);
    an empty string inside a list is a blank line.
    """
    objects: list[bytes] = []  # object number = index + 1

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in once the page tree exists
    pages_obj = add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    page_ids = []
    for lines in pages:
        ops = [b"BT", b"/F1 11 Tf", b"14 TL", b"72 740 Td"]
        for line in lines:
            ops.append(_pdf_string(line) + b" Tj T*")
        ops.append(b"ET")
        stream = b"\n".join(ops) if lines else b""
        content = add(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        page_ids.append(
            add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] "
                b"/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>" % (pages_obj, font, content)
            )
        )
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages_obj
    kids = b" ".join(b"%d 0 R" % page_id for page_id in page_ids)
    objects[pages_obj - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(page_ids))
    info = add(b"<< /Title " + _pdf_string(title) + b" /Producer (ragsite tests) >>") if title else None

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    trailer = b"<< /Size %d /Root %d 0 R" % (len(objects) + 1, catalog)
    if info:
        trailer += b" /Info %d 0 R" % info
    out += b"trailer\n" + trailer + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref_at
    return bytes(out)


# The committed fixture fixtures/orchard-report.pdf is exactly this (a test keeps them in sync).
ORCHARD_REPORT_PAGES = [
    [
        "Orchard Report 2024",
        "The orchard produced 14 tonnes of apples this year, up from 11 tonnes.",
        "Late frost in April damaged blossoms on the eastern slope.",
    ],
    [
        "Pest control",
        "Codling moth traps were checked weekly from May to August.",
        "Damage stayed below two percent of the harvest.",
    ],
    [
        "Plans for next year",
        "We will plant forty new trees of a frost-tolerant variety.",
        "Irrigation lines on the western slope will be replaced.",
    ],
]


def orchard_report_pdf() -> bytes:
    return make_pdf(ORCHARD_REPORT_PAGES, title="Orchard Report 2024")


if __name__ == "__main__":
    from pathlib import Path

    (Path(__file__).parent / "fixtures" / "orchard-report.pdf").write_bytes(orchard_report_pdf())
