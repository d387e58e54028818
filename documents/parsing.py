"""Turn uploaded bytes or pasted text into normalised text plus structure (headings, pages).

Pure functions: no Django, no database, no network. Every entry point (admin, API, `ingest`,
crawler) goes through `parse_document`, so the same input always yields the same text, and
`Section` spans index into that text exactly (`parsed.text[s.char_start:s.char_end] == s.text`).

Supported types: plain text (any `text/*` not listed below), Markdown, HTML, PDF.

The content decides before the label: bytes that start like a PDF are parsed as a PDF whatever
their name or Content-Type says, and bytes of a known binary format (zip, images, ...) are
refused naming that format, also when they claim to be a PDF or text (`sniff_content_type`).

Bounded: the extracted text of one document is at most `max_chars` characters (the caller
passes INGEST_MAX_TEXT_CHARS): a small PDF can expand enormously (one page object listed 5,000
times, or content streams that inflate), and PDF extraction stops as soon as the bound is passed.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import mimetypes
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

logger = logging.getLogger(__name__)

TEXT_PLAIN = "text/plain"
TEXT_MARKDOWN = "text/markdown"
TEXT_HTML = "text/html"
APPLICATION_PDF = "application/pdf"
SUPPORTED_TYPES = (TEXT_PLAIN, TEXT_MARKDOWN, TEXT_HTML, APPLICATION_PDF)

# Labels that say nothing about the content: fall through to the file name, then to sniffing.
_GENERIC_TYPES = frozenset(
    {"", "application/octet-stream", "binary/octet-stream", "application/unknown", "application/x-unknown"}
)
_TYPE_ALIASES = {
    "text/x-markdown": TEXT_MARKDOWN,
    "text/md": TEXT_MARKDOWN,
    "application/xhtml+xml": TEXT_HTML,
    "application/pdf": APPLICATION_PDF,
    "application/x-pdf": APPLICATION_PDF,
}
_EXTENSIONS = {
    ".txt": TEXT_PLAIN,
    ".text": TEXT_PLAIN,
    ".md": TEXT_MARKDOWN,
    ".markdown": TEXT_MARKDOWN,
    ".mdown": TEXT_MARKDOWN,
    ".mkd": TEXT_MARKDOWN,
    ".mdx": TEXT_MARKDOWN,
    ".html": TEXT_HTML,
    ".htm": TEXT_HTML,
    ".xhtml": TEXT_HTML,
    ".pdf": APPLICATION_PDF,
}
_PDF_MAGIC = b"%PDF-"
# Magic numbers of common binary formats, so an upload of one gets "unsupported type: image/png"
# rather than the vaguer "binary data". Short ones ("MZ", "ID3") can begin a text too, so a match
# counts only when the bytes also look binary (see _binary_format).
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
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
    (b"{\\rtf", "application/rtf"),
    (b"OggS", "audio/ogg"),
    (b"ID3", "audio/mpeg"),
    (b"\x00\x00\x00\x18ftyp", "video/mp4"),
    (b"\x00\x00\x00\x20ftyp", "video/mp4"),
    (b"%!PS", "application/postscript"),
)
_BOMS = (
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)
# Below this much main text trafilatura itself gives up on its extractor and returns a flat
# "baseline" dump (navigation included, headings lost); our own small walker does better there.
_TRAFILATURA_MIN_TEXT = 250
# Share of control characters above which decoded "text" is really binary data.
_BINARY_CONTROL_RATIO = 0.01
_TITLE_MAX_CHARS = 300


# --- Results and errors ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Section:
    """A run of the document under one heading path (or one PDF page)."""

    heading_path: list[str]
    text: str
    char_start: int
    char_end: int
    page: int | None = None


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    title: str
    text: str
    mime_type: str
    sections: list[Section]
    metadata: dict = field(default_factory=dict)


class ParseError(Exception):
    """Input that cannot become a document; `message` is safe to show to the user."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class UnsupportedContentType(ParseError):
    pass


class EmptyContent(ParseError):
    pass


class UnreadableContent(ParseError):
    pass


class TextTooLong(ParseError):
    pass


def _unsupported(kind: str) -> UnsupportedContentType:
    return UnsupportedContentType(
        f"Unsupported content type {kind}; supported types are: {', '.join(SUPPORTED_TYPES)}."
    )


# --- Text helpers shared with ingestion --------------------------------------------------------

_NEWLINE_CHARS = re.compile(r"\r\n?|[\x0b\x0c\x85\u2028\u2029]")
# C0/C1 controls except tab and newline, plus stray byte-order marks: invisible, and they upset
# tokenizers and PostgreSQL (NUL cannot be stored in a text column at all).
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\ufeff]")
_EXCESS_BLANK_LINES = re.compile(r"\n{4,}")
_BINARY_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def normalize_text(text: str) -> str:
    """Canonical form of document text: NFC, `\\n` newlines, no trailing spaces on a line,
    at most two consecutive blank lines, no leading or trailing blank lines. Idempotent."""
    text = unicodedata.normalize("NFC", text)
    text = _NEWLINE_CHARS.sub("\n", text)
    text = _CONTROL_CHARS.sub("", text)
    # str.rstrip per line rather than a regex: "[^\S\n]+$" backtracks quadratically on long
    # runs of spaces inside a line. (No "\n" is left inside a line to be stripped.)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = _EXCESS_BLANK_LINES.sub("\n\n\n", text)
    return text.strip("\n")


def content_hash(text: str) -> str:
    """SHA-256 hex of the UTF-8 text, exactly as given (pass normalised text for stable hashes)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- Entry point --------------------------------------------------------------------------------


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

    The type comes from the bytes when they are a PDF or a known binary format, else from
    `mime` (parameters such as `charset=` are honoured), else the extension of `filename` or of
    the `url` path, else the content itself. Raises `UnsupportedContentType`, `EmptyContent`,
    `UnreadableContent` or, over `max_chars` characters of text, `TextTooLong` (all
    `ParseError`) with a message fit for the user.
    """
    parsed = _parse(data=data, text=text, mime=mime, filename=filename, url=url, max_chars=max_chars)
    if max_chars is not None and len(parsed.text) > max_chars:
        raise _too_long(len(parsed.text), max_chars)
    return parsed


def _too_long(length: int | None, max_chars: int) -> TextTooLong:
    size = f" ({length:,} characters)" if length is not None else ""
    return TextTooLong(
        f"The extracted text is longer than the limit of {max_chars:,} characters{size} "
        "(INGEST_MAX_TEXT_CHARS); split the document into smaller files."
    )


def _parse(
    *, data: bytes | None, text: str | None, mime: str, filename: str, url: str, max_chars: int | None
) -> ParsedDocument:
    if (data is None) == (text is None):
        raise ValueError("parse_document needs exactly one of data= or text=")
    if data is not None and not data.strip():
        raise EmptyContent("The file is empty.")
    if text is not None and not text.strip():
        raise EmptyContent("The text is empty.")

    declared, charset = _split_mime(mime)
    name = filename or _url_name(url)
    kind = _detect_type(declared=declared, name=name, from_url=not filename, data=data, text=text)

    if kind == APPLICATION_PDF:
        if data is None:
            raise UnsupportedContentType("A PDF must be uploaded as a file, not pasted as text.")
        return _parse_pdf(data, name=name, max_chars=max_chars)

    if data is not None:
        text = decode_bytes(data, charset=charset)
    assert text is not None
    _reject_binary_text(text)
    if kind == "":
        kind = _sniff_text_type(text)

    if kind == TEXT_HTML:
        return _parse_html(text, name=name, url=url)
    if kind == TEXT_MARKDOWN:
        return _parse_markdown(text, name=name)
    return _parse_plain(text, name=name)


# --- Type detection -----------------------------------------------------------------------------


def _split_mime(mime: str) -> tuple[str, str]:
    base, _, params = (mime or "").partition(";")
    charset = ""
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip("\"'")
    base = base.strip().lower()
    return _TYPE_ALIASES.get(base, base), charset


def _url_name(url: str) -> str:
    if not url:
        return ""
    return unquote(PurePosixPath(urlsplit(url).path).name)


def _classify(kind: str) -> str:
    """Map a MIME type onto one we parse, or raise UnsupportedContentType."""
    kind = _TYPE_ALIASES.get(kind, kind)
    if kind in SUPPORTED_TYPES:
        return kind
    # CSV, source code, reStructuredText...: read as plain text rather than refuse.
    if kind.startswith("text/"):
        return TEXT_PLAIN
    raise _unsupported(kind)


def _detect_type(*, declared: str, name: str, from_url: bool, data: bytes | None, text: str | None) -> str:
    """Return one of SUPPORTED_TYPES, or "" when only the decoded text can tell."""
    suffix = PurePosixPath(name).suffix.lower() if name else ""
    claims_pdf = declared == APPLICATION_PDF or (declared in _GENERIC_TYPES and _EXTENSIONS.get(suffix) == APPLICATION_PDF)
    if data is not None:
        # The bytes first: a PDF named .txt or served as text/html is still a PDF, and a zip
        # named .pdf is a zip.
        if _is_pdf(data):
            return APPLICATION_PDF
        binary = _binary_format(data)
        if binary and claims_pdf:
            raise UnsupportedContentType(f"The file is not a PDF: its content is {binary}.")
        if binary:
            raise _unsupported(binary)
        if claims_pdf:
            looks = "HTML" if _HTML_START.match(data[:2048].decode("utf-8", "replace")) else "text"
            raise UnreadableContent(f"The file is not a PDF: it does not start with %PDF- (it looks like {looks}).")
    if declared not in _GENERIC_TYPES:
        kind = _classify(declared)
        # Servers (GitHub raw, S3, nginx defaults) label Markdown files text/plain.
        if kind == TEXT_PLAIN and _EXTENSIONS.get(suffix) == TEXT_MARKDOWN:
            return TEXT_MARKDOWN
        return kind
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    # A URL path's extension (.php, .aspx, .cgi) says little about what the server returns.
    if suffix and not from_url:
        guessed, _ = mimetypes.guess_type(name, strict=False)
        if guessed and guessed not in _GENERIC_TYPES:
            return _classify(guessed)
    return ""


def _is_pdf(data: bytes) -> bool:
    # Readers accept the header anywhere in the first 1,024 bytes; leading whitespace is common.
    return data[:1024].lstrip().startswith(_PDF_MAGIC)


def _binary_format(data: bytes) -> str:
    """The known binary format the bytes are in, or ""."""
    for magic, kind in _MAGIC:
        if data.startswith(magic) and _looks_binary(data):
            return kind
    return ""


def sniff_content_type(data: bytes) -> str:
    """What the bytes themselves are: "application/pdf", a known binary format ("image/png",
    "application/zip ..."), "text/html" for an obvious HTML page, else "" (text of some kind)."""
    if _is_pdf(data):
        return APPLICATION_PDF
    binary = _binary_format(data)
    if binary:
        return binary.split(" ", 1)[0]
    head = data[:2048].decode("utf-8", "replace")
    return TEXT_HTML if _HTML_START.match(head) or len(_HTML_TAG.findall(head)) >= 3 else ""


_HTML_START = re.compile(r"\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)[\s>]", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"<(?:html|body|head|title|div|p|h[1-6])[\s>]", re.IGNORECASE)
# Written to stay linear on long lines (no nested "[^\n]*\S[^\n]*" backtracking).
_MARKDOWN_HEADING = re.compile(r"^(?: {0,3}#{1,6}[ \t]+\S|[ \t]*\S[^\n]*\n {0,3}(?:=+|-{2,})[ \t]*$)", re.MULTILINE)


def _sniff_text_type(text: str) -> str:
    head = text[:2048]
    if _HTML_START.match(head) or len(_HTML_TAG.findall(head)) >= 3:
        return TEXT_HTML
    if _MARKDOWN_HEADING.search(text[:100_000]):
        return TEXT_MARKDOWN
    return TEXT_PLAIN


# --- Decoding -----------------------------------------------------------------------------------

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_.:\-]+)""", re.IGNORECASE)
_XML_ENCODING = re.compile(rb"""<\?xml[^>]+encoding\s*=\s*["']([a-zA-Z0-9_.:\-]+)""", re.IGNORECASE)


def decode_bytes(data: bytes, *, charset: str = "") -> str:
    """Decode text bytes: byte-order mark, then UTF-8, then the declared charset (from the MIME
    type, an HTML `<meta charset>` or an XML declaration). Never guesses a legacy encoding:
    undeclared non-UTF-8 text is an error, not silent mojibake."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(encoding)
            except UnicodeDecodeError as exc:
                raise UnreadableContent(
                    f"The file starts with a {encoding} byte-order mark but is not valid {encoding}."
                ) from exc
    if b"\x00" in data:
        raise UnreadableContent("The file looks like binary data, not text (it contains NUL bytes).")
    # Valid UTF-8 first, even over a declared legacy charset: multi-byte UTF-8 sequences almost
    # never occur by accident in Latin-1/cp1252 text, while servers mislabel UTF-8 pages often.
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    declared = [charset] if charset else []
    head = data[:4096]
    declared += [m.group(1).decode("ascii") for m in (_META_CHARSET.search(head), _XML_ENCODING.search(head)) if m]
    for name in declared:
        try:
            return data.decode(_legacy_alias(name))
        except LookupError:
            logger.info("Ignoring unknown charset %r", name)
        except UnicodeDecodeError:
            pass
    if _looks_binary(data):
        raise UnreadableContent("The file looks like binary data, not text.")
    if declared:
        raise UnreadableContent(f"The text is not valid in its declared charset ({declared[0]}) nor in UTF-8.")
    raise UnreadableContent(
        "The text is not valid UTF-8 and declares no charset; convert it to UTF-8 or send its charset "
        "(e.g. 'text/plain; charset=windows-1252')."
    )


def _legacy_alias(name: str) -> str:
    # As browsers do (WHATWG Encoding): these labels mean windows-1252 in practice.
    if name.strip().lower() in {"iso-8859-1", "iso8859-1", "latin1", "latin-1", "l1", "us-ascii", "ascii"}:
        return "cp1252"
    return name.strip()


_BINARY_BYTES = bytes([*range(0, 9), 11, *range(14, 32), 127])


def _looks_binary(data: bytes) -> bool:
    sample = data[:65536]
    controls = len(sample) - len(sample.translate(None, _BINARY_BYTES))
    return controls > _BINARY_CONTROL_RATIO * len(sample)


def _reject_binary_text(text: str) -> None:
    sample = text[:65536]
    if "\x00" in sample or len(_BINARY_CONTROL_CHARS.findall(sample)) > _BINARY_CONTROL_RATIO * len(sample):
        raise UnreadableContent("The content looks like binary data, not text (too many control characters).")


# --- Titles -------------------------------------------------------------------------------------


def _clean_inline(text: str) -> str:
    return " ".join(text.split())


def _name_title(name: str) -> str:
    return _clean_inline(PurePosixPath(name).stem) if name else ""


def _first_line_title(text: str) -> str:
    for line in text.split("\n", 20)[:20]:
        line = _clean_inline(line)
        if line:
            return line if len(line) <= 100 else ""
    return ""


def _cap(title: str) -> str:
    return title[:_TITLE_MAX_CHARS].rstrip()


# --- Plain text and Markdown --------------------------------------------------------------------


def _whole_text_section(text: str) -> list[Section]:
    return [Section(heading_path=[], text=text, char_start=0, char_end=len(text))] if text else []


def _parse_plain(text: str, *, name: str) -> ParsedDocument:
    text = normalize_text(text)
    if not text.strip():
        raise EmptyContent("The text is empty (whitespace only).")
    title = _name_title(name) or _first_line_title(text)
    return ParsedDocument(title=_cap(title), text=text, mime_type=TEXT_PLAIN, sections=_whole_text_section(text))


_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
_FRONT_MATTER_TITLE = re.compile(r"^title[ \t]*:[ \t]*(.+?)[ \t]*$", re.MULTILINE)


def _strip_front_matter(text: str) -> tuple[str, str]:
    """Drop a YAML front-matter block (metadata, not content); return (text, its title)."""
    match = _FRONT_MATTER.match(text)
    if not match or len(match.group(1)) > 20_000:
        return text, ""
    title_match = _FRONT_MATTER_TITLE.search(match.group(1))
    title = title_match.group(1).strip().strip("\"'") if title_match else ""
    return text[match.end() :], title


@functools.cache
def _markdown_parsers():
    from markdown_it import MarkdownIt

    # The block parser skips inline parsing (the slow part); heading text is rendered on its own.
    return MarkdownIt("commonmark").disable("inline"), MarkdownIt("commonmark")


def _markdown_inline_text(md, source: str) -> str:
    parts: list[str] = []
    for token in md.parseInline(source):
        for child in token.children or []:
            if child.type in ("text", "code_inline"):
                parts.append(child.content)
            elif child.type in ("softbreak", "hardbreak"):
                parts.append(" ")
    return _clean_inline("".join(parts))


def _parse_markdown(text: str, *, name: str) -> ParsedDocument:
    text, front_title = _strip_front_matter(normalize_text(text))
    text = normalize_text(text)
    if not text.strip():
        raise EmptyContent("The Markdown document is empty.")

    md, md_inline = _markdown_parsers()
    line_starts = [0]
    line_starts.extend(m.end() for m in re.finditer("\n", text))

    # (start offset, body offset, level, heading text); only top-level headings are structure:
    # a "# x" inside a list or quote is content.
    headings: list[tuple[int, int, int, str]] = []
    tokens = md.parse(text)
    for index, token in enumerate(tokens):
        if token.type != "heading_open" or token.level != 0 or not token.map:
            continue
        first_line, end_line = token.map
        start = line_starts[first_line]
        body = line_starts[end_line] if end_line < len(line_starts) else len(text)
        heading = _markdown_inline_text(md_inline, tokens[index + 1].content)
        headings.append((start, body, int(token.tag[1]), heading))

    sections = _sections_from_headings(text, headings)
    first_h1 = next((h[3] for h in headings if h[2] == 1 and h[3]), "")
    title = front_title or first_h1 or _name_title(name) or _first_line_title(text)
    return ParsedDocument(title=_cap(title), text=text, mime_type=TEXT_MARKDOWN, sections=sections)


def _trimmed_section(text: str, start: int, end: int, path: list[str], page: int | None = None) -> Section | None:
    chunk = text[start:end]
    stripped = chunk.strip()
    if not stripped:
        return None
    start += len(chunk) - len(chunk.lstrip())
    end = start + len(stripped)
    return Section(heading_path=path, text=stripped, char_start=start, char_end=end, page=page)


def _sections_from_headings(text: str, headings: list[tuple[int, int, int, str]]) -> list[Section]:
    """Split `text` at heading starts. Each section runs from its heading line to the next
    heading of any level and includes the heading line. A heading with no text of its own
    (directly followed by another heading) opens the next section instead of being a one-line
    section of its own; a trailing one closes the previous section. So the sections cover all
    of the text, and the heading still appears in the heading_path of the sections below it."""
    sections: list[Section] = []
    first_start = headings[0][0] if headings else len(text)
    preamble = _trimmed_section(text, 0, first_start, [])
    if preamble:
        sections.append(preamble)

    stack: list[tuple[int, str]] = []
    pending_start: int | None = None  # start of heading lines still waiting for a body
    pending_path: list[str] = []
    for index, (start, body, level, heading) in enumerate(headings):
        end = headings[index + 1][0] if index + 1 < len(headings) else len(text)
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, heading))
        path = [h for _, h in stack if h]
        if not text[body:end].strip():
            if pending_start is None:
                pending_start, pending_path = start, path
            continue
        section = _trimmed_section(text, start if pending_start is None else pending_start, end, path)
        pending_start = None
        if section:
            sections.append(section)
    if pending_start is not None:
        if sections:
            last = sections.pop()
            sections.append(_trimmed_section(text, last.char_start, len(text), last.heading_path))
        else:
            sections.append(_trimmed_section(text, pending_start, len(text), pending_path))
    return sections


# --- Shared builder for structured blocks (HTML) ------------------------------------------------


def _sections_from_blocks(blocks: list[tuple[int, str]]) -> tuple[str, list[Section]]:
    """Build text and sections from (heading level or 0, text) blocks, joined by blank lines.

    Each block is normalised first; joining normalised blocks with "\\n\\n" keeps the whole
    normalised, since NFC never composes across a newline.
    """
    parts: list[str] = []
    headings: list[tuple[int, int, int, str]] = []
    offset = 0
    for level, raw in blocks:
        block = _clean_inline(raw) if level else normalize_text(raw).strip()
        if not block:
            continue
        if parts:
            offset += 2
        if level:
            headings.append((offset, offset + len(block), level, block))
        parts.append(block)
        offset += len(block)
    text = "\n\n".join(parts)
    return text, _sections_from_headings(text, headings)


# --- HTML ---------------------------------------------------------------------------------------

_XML_DECLARATION = re.compile(r"\A\s*<\?xml[^>]*\?>", re.IGNORECASE)
_HEADING_TAGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_SKIP_TAGS = frozenset(
    {"script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form", "iframe",
     "svg", "button", "select", "head", "title", "object", "embed", "canvas", "menu", "dialog"}
)  # fmt: skip
_BLOCK_TAGS = frozenset(
    {"p", "div", "section", "article", "main", "li", "ul", "ol", "table", "tr", "blockquote", "pre",
     "dl", "dt", "dd", "figure", "figcaption", "address", "hr", "body", "details", "summary", "caption"}
)  # fmt: skip


# libxml2 (under lxml and trafilatura) stops building the tree 256 elements deep and drops the
# rest of the page, reporting it only in the parser's error log: an unclosed <div> per blog post
# loses every post after the 254th. Such pages are parsed again without their layout wrappers,
# which carry no text of their own; each opening one becomes a line break.
HTML_MAX_DEPTH = 255
_WRAPPER_TAG = re.compile(r"<(/?)(?:div|span|section|article|main|font|center)\b[^<>]*>", re.IGNORECASE)
_WRAPPER_TAG_BYTES = re.compile(_WRAPPER_TAG.pattern.encode(), re.IGNORECASE)


def _lxml_html(content: str | bytes):
    """(tree, whether libxml2 cut the tree at its depth limit)."""
    import lxml.html

    parser = lxml.html.HTMLParser()
    tree = lxml.html.document_fromstring(content, parser=parser)
    return tree, any(error.type_name == "ERR_RESOURCE_LIMIT" for error in parser.error_log)


def html_tree(content: str | bytes):
    """Parse HTML with lxml, never silently cut: returns (tree, the markup that was parsed).

    Markup nested deeper than libxml2's limit is parsed again without its layout wrappers (see
    ``_WRAPPER_TAG``); if it is still too deep, UnreadableContent says so. Raises lxml's
    ParserError or ValueError for input that is not a document at all.
    """
    tree, cut = _lxml_html(content)
    if not cut:
        return tree, content
    if isinstance(content, bytes):
        flat: str | bytes = _WRAPPER_TAG_BYTES.sub(lambda m: b"" if m.group(1) else b"<br>", content)
    else:
        flat = _WRAPPER_TAG.sub(lambda m: "" if m.group(1) else "<br>", content)
    tree, cut = _lxml_html(flat)
    if cut:
        raise UnreadableContent(
            f"The HTML nests elements more than {HTML_MAX_DEPTH} deep (beyond its div/span/section wrappers), "
            "so it cannot be read completely."
        )
    return tree, flat


def _parse_html(html: str, *, name: str, url: str) -> ParsedDocument:
    from lxml import etree

    html = _XML_DECLARATION.sub("", html, count=1)
    try:
        tree, html = html_tree(html)
    except (etree.ParserError, ValueError) as exc:
        raise UnreadableContent(f"The HTML could not be parsed: {exc}") from exc

    blocks = _trafilatura_blocks(html, url=url)
    if sum(len(text) for _, text in blocks) < _TRAFILATURA_MIN_TEXT:
        fallback = _lxml_blocks(tree)
        if any(text.strip() for _, text in fallback):
            blocks = fallback
    text, sections = _sections_from_blocks(blocks)
    if not text.strip():
        raise EmptyContent("No readable text was found in the HTML page.")

    title = _html_title(tree) or _name_title(name) or _first_line_title(text)
    metadata = {}
    lang = (tree.get("lang") or tree.get("{http://www.w3.org/XML/1998/namespace}lang") or "").strip()
    if lang:
        metadata["lang"] = lang[:35]
    return ParsedDocument(title=_cap(title), text=text, mime_type=TEXT_HTML, sections=sections, metadata=metadata)


def _html_title(tree) -> str:
    title = _clean_inline(tree.findtext(".//title") or "")
    if title:
        return title
    for content in tree.xpath('//meta[@property="og:title" or @name="og:title"]/@content'):
        if content.strip():
            return _clean_inline(content)
    for h1 in tree.iter("h1"):
        text = _clean_inline(h1.text_content())
        if text:
            return text
    return ""


def _trafilatura_blocks(html: str, *, url: str) -> list[tuple[int, str]]:
    import trafilatura
    from lxml import etree

    try:
        xml = trafilatura.extract(
            html,
            url=url or None,
            output_format="xml",
            include_comments=False,
            include_tables=True,
            include_links=False,
            include_images=False,
            with_metadata=False,
        )
    except Exception:
        # trafilatura is heuristic code over arbitrary markup; any failure means "use the fallback".
        logger.warning("trafilatura failed on %s", url or "an HTML document", exc_info=True)
        return []
    if not xml:
        return []
    main = etree.fromstring(xml.encode("utf-8")).find("main")
    if main is None:
        return []
    blocks: list[tuple[int, str]] = []
    for element in main:
        _xml_element_blocks(element, blocks)
    return blocks


def _xml_inline(element) -> str:
    parts = [element.text or ""]
    for child in element:
        parts.append("\n" if child.tag == "lb" else _xml_inline(child))
        parts.append(child.tail or "")
    return "".join(parts)


def _collapse_lines(text: str) -> str:
    return "\n".join(_clean_inline(line) for line in text.split("\n"))


def _xml_element_blocks(element, blocks: list[tuple[int, str]], depth: int = 0) -> None:
    tag = element.tag
    if tag == "head":
        rend = element.get("rend", "")
        level = int(rend[1]) if len(rend) == 2 and rend[0] == "h" and rend[1] in "123456" else 2
        blocks.append((level, _xml_inline(element)))
    elif tag == "list":
        lines = []
        for item in element.iter("item"):
            own = [item.text or ""]
            for child in item:
                if child.tag != "list":
                    own.append("\n" if child.tag == "lb" else _xml_inline(child))
                own.append(child.tail or "")
            depth_of_item = sum(1 for _ in item.iterancestors("list")) - 1
            line = _clean_inline("".join(own))
            if line:
                lines.append("  " * depth_of_item + "- " + line)
        blocks.append((0, "\n".join(lines)))
    elif tag == "table":
        rows = []
        for row in element.iter("row"):
            cells = [_clean_inline(_xml_inline(cell)) for cell in row.iterchildren("cell")]
            if any(cells):
                rows.append(" | ".join(cells))
        blocks.append((0, "\n".join(rows)))
    elif tag == "code":
        blocks.append((0, "".join(element.itertext())))
    elif tag == "div" and depth < 50:
        for child in element:
            _xml_element_blocks(child, blocks, depth + 1)
    else:
        blocks.append((0, _collapse_lines(_xml_inline(element))))


def _lxml_blocks(tree) -> list[tuple[int, str]]:
    """Plain structural walk of the page: drops script/nav/header/footer/aside and keeps
    headings. Used when trafilatura finds (almost) nothing, which happens on tiny pages."""
    blocks: list[tuple[int, str]] = []
    buffer: list[str] = []

    def flush() -> None:
        text = _collapse_lines("".join(buffer))
        buffer.clear()
        if text.strip():
            blocks.append((0, text))

    def walk(element, in_pre: bool) -> None:
        tag = element.tag if isinstance(element.tag, str) else ""
        if not tag or tag in _SKIP_TAGS:
            return
        if tag in _HEADING_TAGS:
            flush()
            blocks.append((_HEADING_TAGS[tag], element.text_content()))
            return
        if tag == "br":
            buffer.append("\n")
            return
        is_block = tag in _BLOCK_TAGS
        if is_block:
            flush()
            if tag == "li":
                buffer.append("- ")
        pre = in_pre or tag == "pre"
        buffer.append(_html_space(element.text, pre))
        for child in element:
            walk(child, pre)
            buffer.append(_html_space(child.tail, pre))
        if is_block:
            flush()

    body = tree.find("body")
    try:
        walk(body if body is not None else tree, False)
    except RecursionError:
        return [(0, tree.text_content())]
    flush()
    return blocks


def _html_space(text: str | None, pre: bool) -> str:
    if not text:
        return ""
    return text if pre else re.sub(r"\s+", " ", text)


# --- PDF ----------------------------------------------------------------------------------------


def _parse_pdf(data: bytes, *, name: str, max_chars: int | None = None) -> ParsedDocument:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            # Many PDFs are encrypted only against editing, with an empty user password.
            try:
                decrypted = reader.decrypt("")
            except (DependencyError, NotImplementedError) as exc:
                raise UnreadableContent(
                    f"The PDF is encrypted with a scheme that cannot be opened here ({exc})."
                ) from exc
            if not decrypted:
                raise UnreadableContent("The PDF is password-protected; upload an unprotected copy.")
        page_count = len(reader.pages)
    except ParseError:
        raise
    except (PdfReadError, FileNotDecryptedError) as exc:
        raise UnreadableContent(f"The PDF is corrupt or unreadable: {exc}") from exc
    except Exception as exc:
        # pypdf surfaces malformed files as assorted KeyError/ValueError/TypeError/...
        raise UnreadableContent(f"The PDF is corrupt or unreadable ({type(exc).__name__}: {exc}).") from exc

    parts: list[str] = []
    sections: list[Section] = []
    unreadable_pages: list[int] = []
    repeated_pages: list[int] = []
    seen_pages: set[tuple[int, int]] = set()
    offset = 0
    for number in range(1, page_count + 1):
        try:
            page = reader.pages[number - 1]
            # A page tree may list one page object thousands of times (a 30 KB file became 27
            # million characters): its text is extracted once, its repeats are only counted.
            reference = page.indirect_reference
            key = (reference.idnum, reference.generation) if reference is not None else None
            if key is not None and key in seen_pages:
                repeated_pages.append(number)
                continue
            if key is not None:
                seen_pages.add(key)
            raw = page.extract_text() or ""
        except Exception:
            # One broken page should not cost the whole document; it is listed in the metadata.
            logger.warning("Could not extract text from PDF page %s of %s", number, name or "upload", exc_info=True)
            unreadable_pages.append(number)
            continue
        page_text = normalize_text(raw).strip()
        if not page_text:
            continue
        if parts:
            offset += 2
        sections.append(
            Section(heading_path=[], text=page_text, char_start=offset, char_end=offset + len(page_text), page=number)
        )
        parts.append(page_text)
        offset += len(page_text)
        if max_chars is not None and offset > max_chars:
            # Stop here rather than extract the rest only to refuse it.
            raise _too_long(None if number < page_count else offset, max_chars)
    text = "\n\n".join(parts)

    if not text:
        if unreadable_pages and len(unreadable_pages) == page_count:
            raise UnreadableContent("No page of the PDF could be read; the file may be corrupt.")
        raise EmptyContent("The PDF has no extractable text (it may be scanned images; OCR is not supported).")

    metadata: dict = {"pages": page_count}
    if unreadable_pages:
        metadata["unreadable_pages"] = unreadable_pages
    if repeated_pages:
        metadata["repeated_pages"] = _page_ranges(repeated_pages)
    title = _pdf_title(reader) or _name_title(name) or _first_line_title(text)
    return ParsedDocument(title=_cap(title), text=text, mime_type=APPLICATION_PDF, sections=sections, metadata=metadata)


def _page_ranges(numbers: list[int]) -> list[str]:
    """[2, 3, 4, 9] -> ["2-4", "9"]: thousands of repeats stay a short metadata entry."""
    ranges: list[str] = []
    start = previous = numbers[0]
    for number in [*numbers[1:], None]:
        if number is not None and number == previous + 1:
            previous = number
            continue
        ranges.append(str(start) if start == previous else f"{start}-{previous}")
        if number is not None:
            start = previous = number
    return ranges


def _pdf_title(reader) -> str:
    try:
        info = reader.metadata
        return _clean_inline(str(info.title)) if info and info.title else ""
    except Exception:
        return ""
