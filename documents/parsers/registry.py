"""The one table of formats (MIME type -> parser, with the names, extensions and byte signatures
that lead to it) and `parse_document`, the single entry point every caller uses (admin, API,
`ingest`, crawler).

The content decides before the label: bytes that are a PDF, an Office/EPUB package, RTF or an
image are parsed as what they are whatever their name or Content-Type says; bytes of another
binary format are refused naming that format, also when they claim to be a supported one.

Bounded: the extracted text of one document is at most `max_chars` characters (the caller passes
INGEST_MAX_TEXT_CHARS): PDF extraction stops as soon as the bound is passed, and every other
parser has its own hard ceiling (documents.parsers._common.MAX_TEXT_CHARS) before this check.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from documents.parsers import (
    epub,
    html,
    image,
    markdown,
    opendocument,
    pdf,
    powerpoint,
    rtf,
    spreadsheet,
    word,
)
from documents.parsers import text as plain
from documents.parsers._common import DOCX, EPUB, ODT, PPTX, XLSX
from documents.parsers.base import (
    APPLICATION_PDF,
    TEXT_HTML,
    TEXT_MARKDOWN,
    TEXT_PLAIN,
    EmptyContent,
    ParsedDocument,
    UnreadableContent,
    UnsupportedContentType,
    too_long,
)
from documents.parsers.rtf import APPLICATION_RTF
from documents.parsers.sniffing import HTML_START, binary_format, sniff_content_type, sniff_text_type
from documents.parsers.spreadsheet import TEXT_CSV

# What a zip or a compound (OLE) file is before its members are read: a file labelled DOCX that
# is one of these goes to the DOCX parser, which says why it is not a readable DOCX (damaged zip,
# password-protected, legacy .doc) better than "not a DOCX" would.
_OFFICE_CONTAINERS = frozenset({"application/zip", "application/msword"})


@dataclass(frozen=True)
class Format:
    mime: str
    parse: Callable[..., ParsedDocument]
    # "bytes": parse(data, name=..., max_chars=...); "text": parse(text, name=..., url=...) after
    # the bytes are decoded (BOM, UTF-8, then the declared charset).
    reads: str
    extensions: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    # For bytes formats: how messages name it, and what its bytes start with.
    label: str = ""
    signature: str = ""
    # Sniffed container types that still go to this parser when the file is labelled this type.
    containers: frozenset[str] = frozenset()


def _unbounded(parse: Callable[..., ParsedDocument]) -> Callable[..., ParsedDocument]:
    """A bytes parser without a `max_chars` argument (its own ceiling holds; checked after)."""

    def call(data: bytes, *, name: str, max_chars: int | None) -> ParsedDocument:
        return parse(data, name=name)

    return call


_OFFICE = "it is not a zip package"
FORMATS: tuple[Format, ...] = (
    Format(TEXT_PLAIN, plain.parse, "text", (".txt", ".text")),
    Format(
        TEXT_MARKDOWN,
        markdown.parse,
        "text",
        (".md", ".markdown", ".mdown", ".mkd", ".mdx"),
        ("text/x-markdown", "text/md"),
    ),
    Format(TEXT_HTML, html.parse, "text", (".html", ".htm", ".xhtml"), ("application/xhtml+xml",)),
    Format(
        TEXT_CSV,
        spreadsheet.parse_csv,
        "text",
        (".csv", ".tsv"),
        ("application/csv", "text/x-csv", "text/tab-separated-values"),
    ),
    Format(
        APPLICATION_PDF, pdf.parse, "bytes", (".pdf",), ("application/x-pdf",), "a PDF", "it does not start with %PDF-"
    ),
    Format(DOCX, _unbounded(word.parse), "bytes", (".docx",), (), "a DOCX file", _OFFICE, _OFFICE_CONTAINERS),
    Format(PPTX, _unbounded(powerpoint.parse), "bytes", (".pptx",), (), "a PPTX file", _OFFICE, _OFFICE_CONTAINERS),
    Format(XLSX, _unbounded(spreadsheet.parse), "bytes", (".xlsx",), (), "an XLSX file", _OFFICE, _OFFICE_CONTAINERS),
    Format(ODT, _unbounded(opendocument.parse), "bytes", (".odt",), (), "an ODT file", _OFFICE, {"application/zip"}),
    Format(EPUB, _unbounded(epub.parse), "bytes", (".epub",), (), "an EPUB file", _OFFICE, {"application/zip"}),
    Format(
        APPLICATION_RTF,
        _unbounded(rtf.parse),
        "bytes",
        (".rtf",),
        ("text/rtf", "application/x-rtf"),
        "an RTF file",
        "it does not start with {\\rtf",
    ),
    Format("image/png", _unbounded(image.parse), "bytes", (".png",), (), "a PNG image", "it has no PNG signature"),
    Format(
        "image/jpeg",
        _unbounded(image.parse),
        "bytes",
        (".jpg", ".jpeg", ".jpe"),
        ("image/jpg", "image/pjpeg"),
        "a JPEG image",
        "it has no JPEG signature",
    ),
    Format(
        "image/tiff",
        _unbounded(image.parse),
        "bytes",
        (".tif", ".tiff"),
        ("image/x-tiff",),
        "a TIFF image",
        "it has no TIFF signature",
    ),
)
SUPPORTED_TYPES = tuple(f.mime for f in FORMATS)
_BY_TYPE = {name: f for f in FORMATS for name in (f.mime, *f.aliases)}
_BY_EXTENSION = {extension: f for f in FORMATS for extension in f.extensions}
# Every MIME type parse_document reads (aliases included), for the crawler's Accept filter.
ACCEPTED_TYPES = frozenset(_BY_TYPE)

# Labels that say nothing about the content: fall through to the file name, then to sniffing.
_GENERIC_TYPES = frozenset(
    {"", "application/octet-stream", "binary/octet-stream", "application/unknown", "application/x-unknown"}
)


# What a person recognises: the files' extensions, not 14 MIME types (the API's schema lists those).
SUPPORTED_EXTENSIONS = ", ".join(dict.fromkeys(f.extensions[0] for f in FORMATS if f.extensions))


def _unsupported(kind: str) -> UnsupportedContentType:
    return UnsupportedContentType(f"Unsupported file type ({kind}); ragsite reads {SUPPORTED_EXTENSIONS} files.")


def parse_document(
    *,
    data: bytes | None = None,
    text: str | None = None,
    mime: str = "",
    filename: str = "",
    url: str = "",
    max_chars: int | None = None,
) -> ParsedDocument:
    """Parse raw bytes (`data`) or already-decoded `text` into a `ParsedDocument`.

    The type comes from the bytes when they are in a binary format (see the module docstring),
    else from `mime` (parameters such as `charset=` are honoured), else the extension of
    `filename` or of the `url` path, else the content itself. Raises `UnsupportedContentType`,
    `EmptyContent`, `UnreadableContent` or, over `max_chars` characters of text, `TextTooLong`
    (all `ParseError`) with a message fit for the user.
    """
    if (data is None) == (text is None):
        raise ValueError("parse_document needs exactly one of data= or text=")
    if data is not None and not data.strip():
        raise EmptyContent("The file is empty.")
    if text is not None and not text.strip():
        raise EmptyContent("The text is empty.")

    declared, charset = _split_mime(mime)
    name = filename or _url_name(url)
    suffix = PurePosixPath(name).suffix.lower() if name else ""
    labelled, unsupported = _labelled(declared, suffix, from_url=not filename)

    if data is not None:
        found = _from_bytes(data, labelled, _BY_EXTENSION.get(suffix))
        if found is not None:
            return _bounded(found.parse(data, name=name, max_chars=max_chars), max_chars)
    if unsupported:
        raise _unsupported(unsupported)
    if labelled is not None and labelled.reads == "bytes":
        # Only pasted text gets here: bytes labelled as a binary format were decided above.
        label = labelled.label[0].upper() + labelled.label[1:]
        raise UnsupportedContentType(f"{label} must be uploaded as a file, not pasted as text.")

    if data is not None:
        text = plain.decode_bytes(data, charset=charset)
    assert text is not None
    plain.reject_binary_text(text)
    found = labelled or _BY_TYPE[sniff_text_type(text)]
    return _bounded(found.parse(text, name=name, url=url), max_chars)


def _bounded(parsed: ParsedDocument, max_chars: int | None) -> ParsedDocument:
    if max_chars is not None and len(parsed.text) > max_chars:
        raise too_long(len(parsed.text), max_chars)
    return parsed


def _split_mime(mime: str) -> tuple[str, str]:
    base, _, params = (mime or "").partition(";")
    charset = ""
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip("\"'")
    return base.strip().lower(), charset


def _url_name(url: str) -> str:
    if not url:
        return ""
    return unquote(PurePosixPath(urlsplit(url).path).name)


def _classify(kind: str) -> tuple[Format | None, str]:
    """(the format of a declared or guessed MIME type, "") or (None, the type no parser reads)."""
    found = _BY_TYPE.get(kind)
    if found is not None:
        return found, ""
    # Source code, reStructuredText...: read as plain text rather than refuse.
    if kind.startswith("text/"):
        return _BY_TYPE[TEXT_PLAIN], ""
    return None, kind


def _labelled(declared: str, suffix: str, *, from_url: bool) -> tuple[Format | None, str]:
    """What the label says (declared type, else extension), as `_classify`; (None, "") when
    only the content can tell. Not raised here: the content of bytes decides first."""
    if declared not in _GENERIC_TYPES:
        found, unsupported = _classify(declared)
        # Servers (GitHub raw, S3, nginx defaults) label Markdown files text/plain.
        if found is not None and found.mime == TEXT_PLAIN and suffix in _BY_EXTENSION:
            if _BY_EXTENSION[suffix].mime == TEXT_MARKDOWN:
                return _BY_TYPE[TEXT_MARKDOWN], ""
        return found, unsupported
    if suffix in _BY_EXTENSION:
        return _BY_EXTENSION[suffix], ""
    # A URL path's extension (.php, .aspx, .cgi) says little about what the server returns.
    if suffix and not from_url:
        guessed, _ = mimetypes.guess_type(f"x{suffix}", strict=False)
        if guessed and guessed not in _GENERIC_TYPES:
            return _classify(guessed)
    return None, ""


def _from_bytes(data: bytes, labelled: Format | None, named: Format | None) -> Format | None:
    """The bytes format the content is (the content wins), or None for text; raises for binary
    content no parser reads, and for text labelled as a binary format. `named` is the format of
    the file name's extension: a damaged "report.docx" sent as text/plain still reaches the DOCX
    parser, which says what is wrong with it."""
    sniffed = sniff_content_type(data)
    found = _BY_TYPE.get(sniffed)
    if found is not None and found.reads == "bytes":
        return found
    claimed = next((f for f in (labelled, named) if f is not None and f.reads == "bytes"), None)
    if sniffed and sniffed != TEXT_HTML:
        binary = binary_format(data) or sniffed
        for candidate in (labelled, named):
            if candidate is not None and sniffed in candidate.containers:
                return candidate
        if claimed is not None:
            raise UnsupportedContentType(f"The file is not {claimed.label}: its content is {binary}.")
        raise _unsupported(binary)
    if labelled is not None and labelled.reads == "bytes":
        looks = "HTML" if HTML_START.match(data[:2048].decode("utf-8", "replace")) else "text"
        raise UnreadableContent(f"The file is not {labelled.label}: {labelled.signature} (it looks like {looks}).")
    return None


# The types as a reader names them (the document view, messages); the MIME type stays in the API.
_TYPE_NAMES = {
    TEXT_PLAIN: "Text",
    TEXT_MARKDOWN: "Markdown",
    TEXT_HTML: "HTML",
    APPLICATION_PDF: "PDF",
    DOCX: "Word document",
    PPTX: "PowerPoint presentation",
    XLSX: "Excel workbook",
    TEXT_CSV: "CSV table",
    ODT: "OpenDocument text",
    EPUB: "EPUB book",
    APPLICATION_RTF: "RTF document",
    "image/png": "PNG image",
    "image/jpeg": "JPEG image",
    "image/tiff": "TIFF image",
}


def type_name(mime_type: str) -> str:
    """ "Word document" for DOCX's MIME type; an unknown type as it is, an empty one as "Text"."""
    return _TYPE_NAMES.get(mime_type, mime_type or "Text")
