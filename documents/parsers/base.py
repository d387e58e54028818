"""What every parser shares: the result types, the errors, text normalisation and the helpers
that build titles and heading sections.

Pure functions: no Django, no database, no network. `Section` spans index into the document's
text exactly (`parsed.text[s.char_start:s.char_end] == s.text`).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import PurePosixPath

TEXT_PLAIN = "text/plain"
TEXT_MARKDOWN = "text/markdown"
TEXT_HTML = "text/html"
APPLICATION_PDF = "application/pdf"
TITLE_MAX_CHARS = 300

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


# --- Text helpers shared with ingestion --------------------------------------------------------

_NEWLINE_CHARS = re.compile(r"\r\n?|[\x0b\x0c\x85\u2028\u2029]")
# C0/C1 controls except tab and newline, plus stray byte-order marks: invisible, and they upset
# tokenizers and PostgreSQL (NUL cannot be stored in a text column at all).
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\ufeff]")
_EXCESS_BLANK_LINES = re.compile(r"\n{4,}")


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


def too_long(length: int | None, max_chars: int) -> TextTooLong:
    size = f" ({length:,} characters)" if length is not None else ""
    return TextTooLong(
        f"The extracted text is longer than the limit of {max_chars:,} characters{size} "
        "(INGEST_MAX_TEXT_CHARS); split the document into smaller files."
    )


# --- Titles -------------------------------------------------------------------------------------


def clean_inline(text: str) -> str:
    return " ".join(text.split())


def name_title(name: str) -> str:
    return clean_inline(PurePosixPath(name).stem) if name else ""


def first_line_title(text: str) -> str:
    for line in text.split("\n", 20)[:20]:
        line = clean_inline(line)
        if line:
            return line if len(line) <= 100 else ""
    return ""


def title_line(text: str) -> str:
    """The text's own title, if it opens with one: a short first line followed by a blank line.

    "Ocean tides\n\nThe sea rises..." names itself; "Meeting notes, monday.\nWe agreed..." does
    not (no blank line after it), nor does a first line that reads as a sentence or a list item.
    """
    lines = text.lstrip("\n").split("\n", 2)
    if len(lines) < 2 or lines[1].strip():
        return ""
    line = clean_inline(lines[0])
    if not line or len(line) > 100 or len(line.split()) > 15 or line[-1] in ".,;:" or line[0] in "-*+>|#":
        return ""
    return line


def cap_title(title: str) -> str:
    return title[:TITLE_MAX_CHARS].rstrip()


# --- Sections -----------------------------------------------------------------------------------


def whole_text_section(text: str) -> list[Section]:
    return [Section(heading_path=[], text=text, char_start=0, char_end=len(text))] if text else []


def trimmed_section(text: str, start: int, end: int, path: list[str], page: int | None = None) -> Section | None:
    chunk = text[start:end]
    stripped = chunk.strip()
    if not stripped:
        return None
    start += len(chunk) - len(chunk.lstrip())
    end = start + len(stripped)
    return Section(heading_path=path, text=stripped, char_start=start, char_end=end, page=page)


def sections_from_headings(text: str, headings: list[tuple[int, int, int, str]]) -> list[Section]:
    """Split `text` at heading starts. Each section runs from its heading line to the next
    heading of any level and includes the heading line. A heading with no text of its own
    (directly followed by another heading) opens the next section instead of being a one-line
    section of its own; a trailing one closes the previous section. So the sections cover all
    of the text, and the heading still appears in the heading_path of the sections below it."""
    sections: list[Section] = []
    first_start = headings[0][0] if headings else len(text)
    preamble = trimmed_section(text, 0, first_start, [])
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
        section = trimmed_section(text, start if pending_start is None else pending_start, end, path)
        pending_start = None
        if section:
            sections.append(section)
    if pending_start is not None:
        if sections:
            last = sections.pop()
            sections.append(trimmed_section(text, last.char_start, len(text), last.heading_path))
        else:
            sections.append(trimmed_section(text, pending_start, len(text), pending_path))
    return sections


def sections_from_blocks(blocks: list[tuple[int, str]]) -> tuple[str, list[Section]]:
    """Build text and sections from (heading level or 0, text) blocks, joined by blank lines.

    Each block is normalised first; joining normalised blocks with "\\n\\n" keeps the whole
    normalised, since NFC never composes across a newline.
    """
    parts: list[str] = []
    headings: list[tuple[int, int, int, str]] = []
    offset = 0
    for level, raw in blocks:
        block = clean_inline(raw) if level else normalize_text(raw).strip()
        if not block:
            continue
        if parts:
            offset += 2
        if level:
            headings.append((offset, offset + len(block), level, block))
        parts.append(block)
        offset += len(block)
    text = "\n\n".join(parts)
    return text, sections_from_headings(text, headings)
