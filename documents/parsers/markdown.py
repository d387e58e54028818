"""Markdown through markdown-it-py: top-level headings become sections with their heading path;
the source text is kept as written, so offsets point into the file; YAML front matter is dropped
(its `title:` kept as the title)."""

from __future__ import annotations

import functools
import re

from documents.parsers.base import (
    TEXT_MARKDOWN,
    EmptyContent,
    ParsedDocument,
    cap_title,
    clean_inline,
    first_line_title,
    name_title,
    normalize_text,
    sections_from_headings,
    title_line,
)

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
    return clean_inline("".join(parts))


def parse(text: str, *, name: str = "", url: str = "") -> ParsedDocument:
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

    sections = sections_from_headings(text, headings)
    first_h1 = next((h[3] for h in headings if h[2] == 1 and h[3]), "")
    title = front_title or first_h1 or title_line(text) or name_title(name) or first_line_title(text)
    return ParsedDocument(title=cap_title(title), text=text, mime_type=TEXT_MARKDOWN, sections=sections)
