"""DOCX through python-docx: headings from Word's paragraph styles, tables as Markdown rows.

python-docx rather than MarkItDown after bench/formats_bench.py (bench/results/formats.md):
MarkItDown 0.1.9 refuses DOCX files written by python-docx (its equation pre-processing rewrites
document.xml and mammoth then finds no body); mammoth + markdownify without that step keeps the
headings but was slower (1.9 s against 1.1 s) with three times the memory, and reads only the built-in heading styles. python-docx reads
the styles themselves (custom styles based on "Heading N", outline levels) in body order.
"""

from __future__ import annotations

import io
import re

from documents.parsers._common import DOCX, DocumentBuilder, open_zip, pick_title
from documents.parsers.base import EmptyContent, ParsedDocument, UnreadableContent, clean_inline, name_title

_HEADING_STYLE = re.compile(r"^heading\s*([1-9])$", re.IGNORECASE)
_LIST_STYLE = re.compile(r"^list\b", re.IGNORECASE)
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def parse(data: bytes, *, name: str) -> ParsedDocument:
    import docx
    from docx.table import Table

    open_zip(data, "DOCX").close()
    try:
        document = docx.Document(io.BytesIO(data))
        core_title = document.core_properties.title or ""
    except Exception as exc:
        # python-docx reports damaged packages as KeyError, PackageNotFoundError, lxml errors...
        raise UnreadableContent(f"The DOCX file is corrupt or unreadable ({type(exc).__name__}: {exc}).") from exc

    builder = DocumentBuilder("DOCX document")
    stack: list[tuple[int, str]] = []
    first_heading = ""
    styles: dict[str | None, tuple[int, str]] = {}
    try:
        for item in document.iter_inner_content():
            if isinstance(item, Table):
                builder.add_table(_table_rows(item))
                continue
            text = item.text
            if not text.strip():
                continue
            style_level, style_name = _paragraph_style(item, styles)
            level = style_level or _outline_level(item._p.pPr)
            if level:
                heading = clean_inline(text)
                first_heading = first_heading or heading
                while stack and stack[-1][0] >= level:
                    stack.pop()
                stack.append((level, heading))
                builder.start_section([h for _, h in stack])
                builder.add(heading)
            elif _LIST_STYLE.match(style_name):
                builder.add("- " + text.strip())
            else:
                builder.add(text)
    except UnreadableContent:
        raise
    except Exception as exc:
        raise UnreadableContent(f"The DOCX file is corrupt or unreadable ({type(exc).__name__}: {exc}).") from exc
    if builder.empty:
        raise EmptyContent("The DOCX document has no text.")
    title = pick_title(core_title, first_heading, name_title(name))
    return builder.build(title=title, mime_type=DOCX)


def _paragraph_style(paragraph, known: dict[str | None, tuple[int, str]]) -> tuple[int, str]:
    """(the heading level the paragraph's style gives, else 0; the style's name), worked out once
    per style id in `known`. python-docx finds a style by walking every style of the document on
    each lookup (the default style, for every plain paragraph): 90% of parsing a 20-page file
    (bench/results/formats_ingest.md)."""
    try:
        key = paragraph._p.style  # the w:pStyle id; None for the default paragraph style
    except Exception:
        key = None
    if key not in known:
        try:
            style = paragraph.style
        except Exception:
            style = None
        known[key] = (_style_level(style), (style.name or "") if style is not None else "")
    return known[key]


def _style_level(style) -> int:
    """Heading level from a paragraph style or the style it is based on ("My Heading" based on
    "Heading 2" is a level-2 heading), else from their outline level; 0 for body text (the
    paragraph's own outline level may still make it a heading)."""
    depth = 0
    while style is not None and depth < 10:
        name = style.name or ""
        if name.lower() == "title":
            return 1
        match = _HEADING_STYLE.match(name)
        if match:
            return int(match.group(1))
        level = _outline_level(style.element.find(f"{_W}pPr"))
        if level:
            return level
        style = style.base_style
        depth += 1
    return 0


def _outline_level(ppr) -> int:
    if ppr is None:
        return 0
    outline = ppr.find(f"{_W}outlineLvl")
    if outline is None:
        return 0
    try:
        value = int(outline.get(f"{_W}val"))
    except (TypeError, ValueError):
        return 0
    # Level 9 is Word's "body text"; 0-8 are heading levels 1-9.
    return value + 1 if 0 <= value <= 8 else 0


def _table_rows(table) -> list[list[str]]:
    rows = []
    for row in table.rows:
        cells = []
        previous = None
        for cell in row.cells:
            # A horizontally merged cell comes back once per grid column; say it once.
            cells.append("" if cell._tc is previous else cell.text)
            previous = cell._tc
        rows.append(cells)
    return rows
