"""Turn uploaded bytes or pasted text into normalised text plus structure (headings, pages).

One module per format behind one registry (registry.py: MIME type -> parser, plus the
extensions and byte signatures that lead to it); `parse_document` is the single entry point.

- base.py: ParsedDocument, Section, the ParseError family, normalize_text, content_hash;
- sniffing.py: what bytes are, from their own signatures (sniff_content_type);
- text.py (plain text and decoding), markdown.py, html.py, pdf.py (with OCR of scanned pages);
- word.py (DOCX), powerpoint.py (PPTX), spreadsheet.py (XLSX, CSV), opendocument.py (ODT),
  epub.py, rtf.py, image.py (PNG/JPEG/TIFF through OCR), ocr.py (the OCR worker process);
- _common.py: the zip guard and the section builder the Office/e-book parsers share.

Pure functions: no Django, no database, no network.
"""

from __future__ import annotations

from documents.parsers.base import (
    APPLICATION_PDF,
    TEXT_HTML,
    TEXT_MARKDOWN,
    TEXT_PLAIN,
    EmptyContent,
    ParsedDocument,
    ParseError,
    Section,
    TextTooLong,
    UnreadableContent,
    UnsupportedContentType,
    content_hash,
    normalize_text,
)
from documents.parsers.html import html_tree
from documents.parsers.registry import ACCEPTED_TYPES, FORMATS, SUPPORTED_TYPES, parse_document, type_name
from documents.parsers.sniffing import sniff_content_type

__all__ = [
    "ACCEPTED_TYPES",
    "APPLICATION_PDF",
    "FORMATS",
    "SUPPORTED_TYPES",
    "TEXT_HTML",
    "TEXT_MARKDOWN",
    "TEXT_PLAIN",
    "EmptyContent",
    "ParseError",
    "ParsedDocument",
    "Section",
    "TextTooLong",
    "UnreadableContent",
    "UnsupportedContentType",
    "content_hash",
    "html_tree",
    "normalize_text",
    "parse_document",
    "sniff_content_type",
    "type_name",
]
