"""EPUB through ebooklib: one section per chapter (spine document), titled from the table of
contents, else the chapter's first heading; the book's title from its Dublin Core metadata.

ebooklib rather than MarkItDown's EPUB converter: both read the spine in order, but MarkItDown
returns one Markdown string (chapters as '#' lines after a metadata preamble) and was several
times slower in bench/formats_bench.py (bench/results/formats.md).
"""

from __future__ import annotations

import io
import re
import warnings

from documents.parsers._common import EPUB, DocumentBuilder, open_zip, pick_title, read_member
from documents.parsers.base import EmptyContent, ParsedDocument, UnreadableContent, clean_inline, name_title

_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_SKIP = {"script", "style", "head", "title", "nav", "svg", "math", "template", "noscript"}
_BLOCKS = {
    "p", "div", "section", "article", "main", "li", "ul", "ol", "table", "tr", "blockquote", "pre", "dl", "dt",
    "dd", "figure", "figcaption", "aside", "header", "footer", "hr", "body", "br",
}  # fmt: skip
_CONTENT_FILE = re.compile(rb"""URI\s*=\s*["'][^"']+\.(?:x?html?|xml)["']""", re.IGNORECASE)
_MAX_DEPTH = 200


def parse(data: bytes, *, name: str) -> ParsedDocument:
    from ebooklib import ITEM_DOCUMENT, epub

    archive = open_zip(data, "EPUB")
    encryption = read_member(archive, "META-INF/encryption.xml") or b""
    archive.close()
    # Fonts are often "obfuscated" (listed in encryption.xml) in DRM-free books; encrypted chapters
    # mean DRM, and their bytes would read as noise.
    if _CONTENT_FILE.search(encryption):
        raise UnreadableContent("The EPUB is DRM-protected (its chapters are encrypted); upload a DRM-free copy.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            book = epub.read_epub(io.BytesIO(data), {"ignore_ncx": False})
        metadata_title = next((t for t, _ in book.get_metadata("DC", "title") if t), "")
        toc = _toc_titles(book.toc)
        chapters = []
        for idref, _linear in book.spine:
            item = book.get_item_with_id(idref)
            if item is not None and item.get_type() == ITEM_DOCUMENT:
                chapters.append(item)
    except Exception as exc:
        raise UnreadableContent(f"The EPUB file is corrupt or unreadable ({type(exc).__name__}: {exc}).") from exc

    builder = DocumentBuilder("EPUB book")
    count = 0
    for item in chapters:
        blocks = _blocks(item.get_content())
        if not any(text.strip() for _, text in blocks):
            continue
        first_heading = next((text for level, text in blocks if level), "")
        chapter = toc.get(item.get_name()) or first_heading
        count += 1
        builder.start_section([chapter] if chapter else [])
        for _, text in blocks:
            builder.add(text)
    if builder.empty:
        raise EmptyContent("The EPUB book has no text.")
    title = pick_title(metadata_title, name_title(name))
    return builder.build(title=title, mime_type=EPUB, metadata={"chapters": count})


def _toc_titles(toc, depth: int = 0) -> dict[str, str]:
    """href (without #fragment) -> the first table-of-contents title pointing at it."""
    titles: dict[str, str] = {}
    if depth > 20:
        return titles
    for entry in toc:
        if isinstance(entry, tuple) and len(entry) == 2:
            section, children = entry
            href = getattr(section, "href", "") or ""
            if href and getattr(section, "title", ""):
                titles.setdefault(href.split("#")[0], clean_inline(section.title))
            for key, value in _toc_titles(children, depth + 1).items():
                titles.setdefault(key, value)
        elif getattr(entry, "href", None):
            titles.setdefault(entry.href.split("#")[0], clean_inline(entry.title or ""))
    return {k: v for k, v in titles.items() if v}


def _blocks(content: bytes) -> list[tuple[int, str]]:
    """(heading level or 0, text) blocks of one XHTML chapter, in reading order."""
    import lxml.html
    from lxml import etree

    try:
        tree = lxml.html.document_fromstring(content)
    except (etree.ParserError, ValueError):
        return []
    blocks: list[tuple[int, str]] = []
    buffer: list[str] = []

    def flush() -> None:
        text = clean_inline("".join(buffer))
        buffer.clear()
        if text:
            blocks.append((0, text))

    def walk(element, depth: int) -> None:
        tag = element.tag if isinstance(element.tag, str) else ""
        if not tag or tag in _SKIP or depth > _MAX_DEPTH:
            return
        if tag in _HEADINGS:
            flush()
            heading = clean_inline(element.text_content())
            if heading:
                blocks.append((int(tag[1]), heading))
            return
        is_block = tag in _BLOCKS
        if is_block:
            flush()
            if tag == "li":
                buffer.append("- ")
        buffer.append(element.text or "")
        for child in element:
            walk(child, depth + 1)
            buffer.append(child.tail or "")
        if is_block:
            flush()

    body = tree.find("body")
    walk(body if body is not None else tree, 0)
    flush()
    return blocks
