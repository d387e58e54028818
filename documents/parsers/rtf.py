"""RTF through striprtf: plain text (RTF styles carry no reliable heading structure), title from
the document's {\\info{\\title ...}} group, else the file name, else its first line.

MarkItDown has no RTF converter of its own (a third-party plugin wraps striprtf too).
"""

from __future__ import annotations

import re

from documents.parsers._common import MAX_TEXT_CHARS, DocumentBuilder, pick_title, too_much_text
from documents.parsers.base import EmptyContent, ParsedDocument, UnreadableContent, name_title, title_line

APPLICATION_RTF = "application/rtf"
_CODEPAGE = re.compile(rb"\\ansicpg(\d{3,5})")
_INFO_TITLE = re.compile(rb"\{\\info\b.{0,2000}?\{\\title\s([^{}]{1,600})\}", re.DOTALL)
_ESCAPED_BYTE = re.compile(r"\\'([0-9a-fA-F]{2})")


def parse(data: bytes, *, name: str) -> ParsedDocument:
    from striprtf.striprtf import rtf_to_text

    if not data.lstrip()[:5] == b"{\\rtf":
        raise UnreadableContent("The RTF file is corrupt: it does not start with the {\\rtf header.")
    # RTF is 7-bit text; anything beyond ASCII is escaped (\'e9, \u233?) in the \ansicpg code page.
    match = _CODEPAGE.search(data[:4096])
    encoding = f"cp{match.group(1).decode()}" if match else "cp1252"
    try:
        "".encode(encoding)
    except LookupError:
        encoding = "cp1252"
    source = data.decode("latin-1")
    try:
        text = rtf_to_text(source, encoding=encoding, errors="replace")
    except Exception as exc:
        raise UnreadableContent(f"The RTF file is corrupt or unreadable ({type(exc).__name__}: {exc}).") from exc
    if len(text) > MAX_TEXT_CHARS:
        raise too_much_text("RTF document")
    builder = DocumentBuilder("RTF document")
    builder.add(text)
    if builder.empty:
        raise EmptyContent("The RTF document has no text.")
    parsed = builder.build(title="", mime_type=APPLICATION_RTF)
    first_line = parsed.text.split("\n", 1)[0]
    title = pick_title(
        _info_title(data, encoding),
        title_line(parsed.text),
        name_title(name),
        first_line if len(first_line) <= 100 else "",
    )
    return ParsedDocument(title=title, text=parsed.text, mime_type=APPLICATION_RTF, sections=parsed.sections)


def _info_title(data: bytes, encoding: str) -> str:
    match = _INFO_TITLE.search(data[:200_000])
    if not match:
        return ""
    raw = match.group(1).decode("latin-1")
    return _ESCAPED_BYTE.sub(lambda m: bytes([int(m.group(1), 16)]).decode(encoding, "replace"), raw)
