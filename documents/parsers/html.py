"""HTML through trafilatura (the page's main text, without navigation, headers and footers) with
a small lxml walker for pages too short for trafilatura's extractor; headings become sections,
the title comes from <title>, og:title, then the first <h1>."""

from __future__ import annotations

import logging
import re

from documents.parsers.base import (
    TEXT_HTML,
    EmptyContent,
    ParsedDocument,
    UnreadableContent,
    cap_title,
    clean_inline,
    first_line_title,
    name_title,
    sections_from_blocks,
)

logger = logging.getLogger(__name__)

# Below this much main text trafilatura itself gives up on its extractor and returns a flat
# "baseline" dump (navigation included, headings lost); our own small walker does better there.
_TRAFILATURA_MIN_TEXT = 250

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


def parse(html: str, *, name: str = "", url: str = "") -> ParsedDocument:
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
    text, sections = sections_from_blocks(blocks)
    if not text.strip():
        raise EmptyContent("No readable text was found in the HTML page.")

    title = _html_title(tree) or name_title(name) or first_line_title(text)
    metadata = {}
    lang = (tree.get("lang") or tree.get("{http://www.w3.org/XML/1998/namespace}lang") or "").strip()
    if lang:
        metadata["lang"] = lang[:35]
    return ParsedDocument(title=cap_title(title), text=text, mime_type=TEXT_HTML, sections=sections, metadata=metadata)


def _html_title(tree) -> str:
    title = clean_inline(tree.findtext(".//title") or "")
    if title:
        return title
    for content in tree.xpath('//meta[@property="og:title" or @name="og:title"]/@content'):
        if content.strip():
            return clean_inline(content)
    for h1 in tree.iter("h1"):
        text = clean_inline(h1.text_content())
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
    return "\n".join(clean_inline(line) for line in text.split("\n"))


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
            line = clean_inline("".join(own))
            if line:
                lines.append("  " * depth_of_item + "- " + line)
        blocks.append((0, "\n".join(lines)))
    elif tag == "table":
        rows = []
        for row in element.iter("row"):
            cells = [clean_inline(_xml_inline(cell)) for cell in row.iterchildren("cell")]
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
