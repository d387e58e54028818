"""What bytes are, told from the bytes themselves: the content decides before any label.

A PDF named .txt is a PDF, a zip named .pdf is a zip, a DOCX served as application/octet-stream
is a DOCX (its zip members say so). Known binary formats that no parser reads are named
("image/gif", "application/zip") so the refusal says what the file is.
"""

from __future__ import annotations

import re

from documents.parsers._common import sniff_office
from documents.parsers.base import APPLICATION_PDF, TEXT_HTML, TEXT_MARKDOWN, TEXT_PLAIN

_PDF_MAGIC = b"%PDF-"
_RTF_MAGIC = b"{\\rtf"
# Magic numbers of binary formats. Short ones ("MZ", "ID3") can begin a text too, so a match
# counts only when the bytes also look binary (see binary_format). Zips are told apart by their
# members (sniff_office); one that is no Office/EPUB file stays "application/zip".
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"RIFF", "application/octet-stream (RIFF: audio/video/image)"),
    (b"PK\x03\x04", "application/zip (or an Office/EPUB file)"),
    (b"\x1f\x8b", "application/gzip"),
    (b"BZh", "application/x-bzip2"),
    (b"\xfd7zXZ\x00", "application/x-xz"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"Rar!\x1a\x07", "application/vnd.rar"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/msword (legacy Office file)"),
    (b"\x7fELF", "application/x-executable"),
    (b"MZ", "application/x-msdownload"),
    (b"OggS", "audio/ogg"),
    (b"ID3", "audio/mpeg"),
    (b"\x00\x00\x00\x18ftyp", "video/mp4"),
    (b"\x00\x00\x00\x20ftyp", "video/mp4"),
    (b"%!PS", "application/postscript"),
)
# Share of control characters above which decoded "text" is really binary data.
BINARY_CONTROL_RATIO = 0.01
_BINARY_BYTES = bytes([*range(0, 9), 11, *range(14, 32), 127])

HTML_START = re.compile(r"\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)[\s>]", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"<(?:html|body|head|title|div|p|h[1-6])[\s>]", re.IGNORECASE)
# Written to stay linear on long lines (no nested "[^\n]*\S[^\n]*" backtracking).
_MARKDOWN_HEADING = re.compile(r"^(?: {0,3}#{1,6}[ \t]+\S|[ \t]*\S[^\n]*\n {0,3}(?:=+|-{2,})[ \t]*$)", re.MULTILINE)


def is_pdf(data: bytes) -> bool:
    # Readers accept the header anywhere in the first 1,024 bytes; leading whitespace is common.
    return data[:1024].lstrip().startswith(_PDF_MAGIC)


def is_rtf(data: bytes) -> bool:
    # RTF is 7-bit text, so it never "looks binary"; its five-byte header is unambiguous.
    return data[:64].lstrip().startswith(_RTF_MAGIC)


def looks_binary(data: bytes) -> bool:
    sample = data[:65536]
    controls = len(sample) - len(sample.translate(None, _BINARY_BYTES))
    return controls > BINARY_CONTROL_RATIO * len(sample)


def binary_format(data: bytes) -> str:
    """The binary format the bytes are in ("image/png", "application/vnd...document" for a DOCX,
    "application/zip (or an Office/EPUB file)" for another zip...), or ""."""
    for magic, kind in _MAGIC:
        if data.startswith(magic) and looks_binary(data):
            if magic == b"PK\x03\x04":
                return sniff_office(data) or kind
            return kind
    return ""


def sniff_content_type(data: bytes) -> str:
    """What the bytes themselves are: "application/pdf", "application/rtf", a binary format's
    MIME type ("image/png", the DOCX/PPTX/XLSX/ODT/EPUB types, "application/zip" for another
    zip...), "text/html" for an obvious HTML page, else "" (text of some kind)."""
    if is_pdf(data):
        return APPLICATION_PDF
    if is_rtf(data):
        return "application/rtf"
    binary = binary_format(data)
    if binary:
        return binary.split(" ", 1)[0]
    head = data[:2048].decode("utf-8", "replace")
    return TEXT_HTML if HTML_START.match(head) or len(_HTML_TAG.findall(head)) >= 3 else ""


def sniff_text_type(text: str) -> str:
    """HTML, Markdown or plain text, for decoded text that came with no usable label."""
    head = text[:2048]
    if HTML_START.match(head) or len(_HTML_TAG.findall(head)) >= 3:
        return TEXT_HTML
    if _MARKDOWN_HEADING.search(text[:100_000]):
        return TEXT_MARKDOWN
    return TEXT_PLAIN
