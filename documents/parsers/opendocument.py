"""ODT through odfpy: headings (text:h with their outline level), paragraphs, lists, tables.

MarkItDown has no OpenDocument converter; odfpy is the OpenDocument reference library for Python.
"""

from __future__ import annotations

import io

from documents.parsers._common import ODT, DocumentBuilder, open_zip, pick_title, read_member
from documents.parsers.base import EmptyContent, ParsedDocument, UnreadableContent, clean_inline, name_title

_TEXT = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
_TABLE = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"
_DC = "http://purl.org/dc/elements/1.1/"
_MAX_DEPTH = 50
# Containers whose children are read as blocks; anything else is read as one block of text.
_CONTAINERS = {(_TEXT, "section"), (_TEXT, "list"), (_TEXT, "list-item"), (_TEXT, "list-header"), (_TEXT, "index-body")}
_SKIPPED = {
    (_TEXT, "sequence-decls"),
    (_TEXT, "variable-decls"),
    (_TEXT, "tracked-changes"),
    (_TEXT, "table-of-content"),
}


def parse(data: bytes, *, name: str) -> ParsedDocument:
    from odf.opendocument import load

    archive = open_zip(data, "ODT")
    manifest = read_member(archive, "META-INF/manifest.xml") or b""
    archive.close()
    if b"encryption-data" in manifest:
        raise UnreadableContent("The ODT file is password-protected (encrypted); upload an unprotected copy.")
    try:
        document = load(io.BytesIO(data))
        body = document.text
        meta_title = _meta_title(document)
    except Exception as exc:
        raise UnreadableContent(f"The ODT file is corrupt or unreadable ({type(exc).__name__}: {exc}).") from exc

    builder = DocumentBuilder("ODT document")
    state = {"stack": [], "first_heading": ""}
    try:
        for child in body.childNodes:
            _walk(child, builder, state, 0)
    except UnreadableContent:
        raise
    except Exception as exc:
        raise UnreadableContent(f"The ODT file is corrupt or unreadable ({type(exc).__name__}: {exc}).") from exc
    if builder.empty:
        raise EmptyContent("The ODT document has no text.")
    title = pick_title(meta_title, state["first_heading"], name_title(name))
    return builder.build(title=title, mime_type=ODT)


def _meta_title(document) -> str:
    from odf import teletype

    for element in document.meta.childNodes:
        if getattr(element, "qname", None) == (_DC, "title"):
            return teletype.extractText(element)
    return ""


def _walk(node, builder: DocumentBuilder, state: dict, depth: int) -> None:
    from odf import teletype

    qname = getattr(node, "qname", None)
    if qname is None or qname in _SKIPPED or depth > _MAX_DEPTH:
        return
    if qname == (_TEXT, "h"):
        heading = clean_inline(teletype.extractText(node))
        if not heading:
            return
        try:
            level = max(1, min(10, int(node.getAttrNS(_TEXT, "outline-level") or 1)))
        except ValueError:
            level = 1
        stack = state["stack"]
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, heading))
        state["first_heading"] = state["first_heading"] or heading
        builder.start_section([h for _, h in stack])
        builder.add(heading)
    elif qname == (_TEXT, "list-item"):
        for child in node.childNodes:
            if getattr(child, "qname", None) == (_TEXT, "p"):
                builder.add("- " + teletype.extractText(child).strip())
            else:
                _walk(child, builder, state, depth + 1)
    elif qname in _CONTAINERS:
        for child in node.childNodes:
            _walk(child, builder, state, depth + 1)
    elif qname == (_TABLE, "table"):
        builder.add_table(_table_rows(node))
    else:
        builder.add(teletype.extractText(node))


def _table_rows(table) -> list[list[str]]:
    from odf import teletype

    rows = []
    for row in table.getElementsByType(_row_class()):
        cells = []
        for cell in row.childNodes:
            if getattr(cell, "qname", None) == (_TABLE, "table-cell"):
                # number-columns-repeated is deliberately not expanded: a repeated cell is read once.
                cells.append(" ".join(teletype.extractText(p) for p in cell.childNodes if getattr(p, "qname", None)))
        rows.append(cells)
    return rows


def _row_class():
    from odf.table import TableRow

    return TableRow
