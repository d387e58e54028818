"""Office, e-book and image files written by the real writer libraries, for tests and bench/.

Each builder returns the file's bytes. Nothing is downloaded; the same calls at a larger `scale`
make the bench's documents.
"""

from __future__ import annotations

import io
import zipfile


def make_docx(
    *,
    title: str | None,
    sections: list[tuple[int, str, list[str]]],
    table: list[list[str]] | None = None,
    custom_heading: tuple[str, str] | None = None,
) -> bytes:
    """`sections`: (heading level, heading, paragraphs). `custom_heading`: (style name, text) of a
    heading in a user-defined style based on "Heading 2", appended last."""
    import docx
    from docx.enum.style import WD_STYLE_TYPE

    document = docx.Document()
    if title is not None:
        document.core_properties.title = title
    for level, heading, paragraphs in sections:
        document.add_heading(heading, level=level)
        for paragraph in paragraphs:
            document.add_paragraph(paragraph)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    if custom_heading:
        style = document.styles.add_style(custom_heading[0], WD_STYLE_TYPE.PARAGRAPH)
        style.base_style = document.styles["Heading 2"]
        document.add_paragraph(custom_heading[1], style=style)
        document.add_paragraph("Text under the custom heading.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def make_pptx(*, title: str | None, slides: list[tuple[str, list[str], str]]) -> bytes:
    """`slides`: (title, bullet lines, speaker notes)."""
    from pptx import Presentation

    presentation = Presentation()
    if title is not None:
        presentation.core_properties.title = title
    layout = presentation.slide_layouts[1]  # "Title and Content"
    for slide_title, bullets, notes in slides:
        slide = presentation.slides.add_slide(layout)
        slide.shapes.title.text = slide_title
        body = slide.placeholders[1].text_frame
        body.text = bullets[0] if bullets else ""
        for line in bullets[1:]:
            body.add_paragraph().text = line
        if notes:
            slide.notes_slide.notes_text_frame.text = notes
    out = io.BytesIO()
    presentation.save(out)
    return out.getvalue()


def make_xlsx(*, title: str | None, sheets: dict[str, list[list]]) -> bytes:
    from openpyxl import Workbook

    workbook = Workbook()
    workbook.remove(workbook.active)
    if title is not None:
        workbook.properties.title = title
    for name, rows in sheets.items():
        sheet = workbook.create_sheet(name)
        for row in rows:
            sheet.append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def make_odt(
    *, title: str | None, sections: list[tuple[int, str, list[str]]], table: list[list[str]] | None = None
) -> bytes:
    from odf import dc, text
    from odf import table as odf_table
    from odf.opendocument import OpenDocumentText

    document = OpenDocumentText()
    if title is not None:
        document.meta.addElement(dc.Title(text=title))
    for level, heading, paragraphs in sections:
        document.text.addElement(text.H(outlinelevel=level, text=heading))
        for paragraph in paragraphs:
            document.text.addElement(text.P(text=paragraph))
    if table:
        grid = odf_table.Table(name="Table1")
        grid.addElement(odf_table.TableColumn(numbercolumnsrepeated=len(table[0])))
        for row in table:
            table_row = odf_table.TableRow()
            for value in row:
                cell = odf_table.TableCell()
                cell.addElement(text.P(text=value))
                table_row.addElement(cell)
            grid.addElement(table_row)
        document.text.addElement(grid)
    out = io.BytesIO()
    document.write(out)
    return out.getvalue()


def make_epub(*, title: str, chapters: list[tuple[str, list[str]]]) -> bytes:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("ragsite-test-book")
    book.set_title(title)
    book.set_language("en")
    items = []
    for number, (chapter_title, paragraphs) in enumerate(chapters, start=1):
        item = epub.EpubHtml(title=chapter_title, file_name=f"chap_{number:02d}.xhtml", lang="en")
        body = "".join(f"<p>{p}</p>" for p in paragraphs)
        item.content = f"<html><body><h1>{chapter_title}</h1>{body}</body></html>"
        book.add_item(item)
        items.append(item)
    book.toc = items
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *items]
    out = io.BytesIO()
    epub.write_epub(out, book)
    return out.getvalue()


def make_rtf(*, title: str | None, paragraphs: list[str]) -> bytes:
    """RTF is a text format: written as RTF source (no writer library needed), with the
    non-ASCII characters escaped the way word processors do."""

    def escape(value: str) -> str:
        out = []
        for char in value:
            if char in "\\{}":
                out.append("\\" + char)
            elif ord(char) < 128:
                out.append(char)
            else:
                out.append(f"\\'{char.encode('cp1252')[0]:02x}")
        return "".join(out)

    info = "{\\info{\\title " + escape(title) + "}}" if title else ""
    body = "".join("\\pard " + escape(p) + "\\par\n" for p in paragraphs)
    source = "{\\rtf1\\ansi\\ansicpg1252\\deff0{\\fonttbl{\\f0 Times New Roman;}}" + info + "\n" + body + "}"
    return source.encode("ascii")


def render_text_image(lines: list[str], *, size: tuple[int, int] = (1000, 400), format: str = "PNG") -> bytes:
    """A picture of printed text (black on white, 36 px type) in the given image format."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=36)
    for index, line in enumerate(lines):
        draw.text((40, 40 + 60 * index), line, fill="black", font=font)
    out = io.BytesIO()
    image.save(out, format=format)
    return out.getvalue()


def make_scanned_pdf(pages: list[list[str]]) -> bytes:
    """A PDF whose pages are images of text only (no text layer), as a scanner makes them."""
    from fpdf import FPDF

    pdf = FPDF(unit="pt", format="A4")
    for lines in pages:
        pdf.add_page()
        png = render_text_image(lines, size=(1240, 1754))
        pdf.image(io.BytesIO(png), x=0, y=0, w=pdf.w, h=pdf.h)
    return bytes(pdf.output())


def make_zip_bomb(
    *, members: dict[str, bytes], bomb_name: str = "word/bomb.xml", bomb_bytes: int = 400 * 1024 * 1024
) -> bytes:
    """A zip with the given members plus one that inflates to `bomb_bytes` of zeros (a few
    hundred kB stored), written in pieces so the test never holds the inflated data."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        block = b"\0" * (1 << 20)
        with archive.open(bomb_name, "w", force_zip64=True) as handle:
            for _ in range(bomb_bytes // len(block)):
                handle.write(block)
    return out.getvalue()
