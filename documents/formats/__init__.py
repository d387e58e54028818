"""Parsers for office, e-book and image formats, one module per format, each exposing
`parse(data: bytes, *, name: str) -> ParsedDocument` with the same contract as
documents.parsing (exact Section spans, ParseError subclasses with messages fit for the user).

Structure kept as Sections: Word headings as heading_path; PPTX slides and PDF/TIFF pages as
`page`; a workbook's sheet name and an EPUB's chapter title as the first heading_path element.

Pure functions like documents.parsing: no Django, no database, no network. Every container is
checked for size before a library opens it (see _common.open_zip), and extracted text is capped.
"""

from __future__ import annotations

from documents.formats import epub, image, opendocument, powerpoint, rtf, spreadsheet, word
from documents.formats._common import DOCX, EPUB, ODT, PPTX, XLSX, sniff_office
from documents.formats.ocr import ocr_image, ocr_pdf_page_images
from documents.formats.rtf import APPLICATION_RTF
from documents.formats.spreadsheet import TEXT_CSV

# MIME type -> parser, for the parser registry.
PARSERS = {
    DOCX: word.parse,
    PPTX: powerpoint.parse,
    XLSX: spreadsheet.parse,
    TEXT_CSV: spreadsheet.parse_csv,
    ODT: opendocument.parse,
    EPUB: epub.parse,
    APPLICATION_RTF: rtf.parse,
    "image/png": image.parse,
    "image/jpeg": image.parse,
    "image/tiff": image.parse,
}

__all__ = ["PARSERS", "ocr_image", "ocr_pdf_page_images", "sniff_office"]
