"""Plain text: decoding bytes to text (shared by every text format) and the plain-text parser,
which reads any `text/*` type without a parser of its own (source code, reStructuredText...)."""

from __future__ import annotations

import logging
import re

from documents.parsers.base import (
    TEXT_PLAIN,
    EmptyContent,
    ParsedDocument,
    UnreadableContent,
    cap_title,
    first_line_title,
    name_title,
    normalize_text,
    title_line,
    whole_text_section,
)
from documents.parsers.sniffing import BINARY_CONTROL_RATIO, looks_binary

logger = logging.getLogger(__name__)

_BOMS = (
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)
_BINARY_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")

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
    if looks_binary(data):
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


def reject_binary_text(text: str) -> None:
    sample = text[:65536]
    if "\x00" in sample or len(_BINARY_CONTROL_CHARS.findall(sample)) > BINARY_CONTROL_RATIO * len(sample):
        raise UnreadableContent("The content looks like binary data, not text (too many control characters).")


def parse(text: str, *, name: str = "", url: str = "") -> ParsedDocument:
    text = normalize_text(text)
    if not text.strip():
        raise EmptyContent("The text is empty (whitespace only).")
    title = title_line(text) or name_title(name) or first_line_title(text)
    return ParsedDocument(title=cap_title(title), text=text, mime_type=TEXT_PLAIN, sections=whole_text_section(text))
