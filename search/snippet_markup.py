"""Markup out of snippets: Markdown and HTML syntax removed from a chunk's text, its words kept.

Chunks keep their text as written (offsets point into the original; the document view shows it
as it is), so a Markdown file's chunk holds ``## Brewing``, ``**steamed**`` and
``[the guide](https://…)``, and Word, EPUB and spreadsheet chunks hold Markdown tables. A
snippet is for reading: ``markup_strip`` removes headings' ``#``, emphasis, inline code
backticks, link and image syntax (the text or alt stays), reference definitions, HTML formatting
tags and comments, table pipes and separator rows, rules, list bullets and numbers, block quote
``>`` and backslash escapes, and decodes entities. It is applied to snippets only, never to
stored chunks.

The text may carry MARK_START / MARK_STOP, the control characters around ts_headline's matches.
They are never removed: what goes takes only its characters with it and leaves its markers, so a
match inside a link or in bold keeps both its ends on its word (an emptied pair is dropped).

Block boundaries (paragraphs, headings, list items, table rows, code lines) come out as "\\n",
wrapped lines of a paragraph as one space, so the cutter can prefer them as sentence ends.

Linear in the text's length, whatever it holds: every regular expression is matched at positions
that only move forward and stops at the first character of a small set (no nested or adjacent
quantifiers over the same characters), and nothing searches backwards or to the end of the text
more than once.
"""

from __future__ import annotations

import html
import re
import string
import unicodedata

MARK_START = "\x02"
MARK_STOP = "\x03"
_MARKERS = MARK_START + MARK_STOP

# Separates a table row's cells.
CELL_SEPARATOR = " · "

# --- block level: one line at a time -------------------------------------------------------------

_FENCE = re.compile(r"[ \t]{0,3}(`{3,}|~{3,})")
_QUOTE = re.compile(r"(?:[ \t]*>)+[ \t]?")
_HEADING = re.compile(r"[ \t]{0,3}#{1,6}(?:[ \t]+|$)")
# A number may carry a match's markers ("1." when the query has "1").
_LIST_ITEM = re.compile(r"[ \t]*(?:[-*+\u2022]|\x02?[0-9]{1,9}\x03?[.)])(?:[ \t]+|$)")
_TASK_BOX = re.compile(r"\[[ xX]\][ \t]+")
_REFERENCE_DEFINITION = re.compile(r"[ \t]{0,3}\[([^\[\]\n]{1,200})\]:")
_CELL_PIPE = re.compile(r"(?<!\\)\|")
_SEPARATOR_ROW_CHARS = frozenset("|-: \t")
_RULE_CHARS = frozenset("-*_=")

# --- inline: a scan for the next character that may start syntax ----------------------------------

_INLINE = re.compile(r"`+|\\[!-/:-@\[-`{-~]|!\[|\[|\]|\*+|_+|~~+|<|&|https?://|www\.")
_BARE_URL = re.compile(r"[^\s<>\[\]()`]*")
_SPACES = re.compile(r"[ \t]*")
_LINK_DESTINATION = re.compile(r"<[^<>\n]*>|[^\s()<>]*(?:\([^\s()<>]*\)[^\s()<>]*)?")
_LINK_TITLE = re.compile(r"\"[^\"\n]*\"|'[^'\n]*'|\([^()\n]*\)")
_LINK_REFERENCE = re.compile(r"\[[^\[\]\n]{0,200}\]")
_AUTOLINK = re.compile(r"<((?:https?|ftp|mailto):[^\s<>]*|[^\s<>@]{1,200}@[^\s<>@]{1,200})>", re.IGNORECASE)
_TAG = re.compile(r"</?([A-Za-z][A-Za-z0-9]{0,15})(?:\s[^<>]*)?/?>")
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")

# HTML that formats text: removed. Any other "<word>" (``List<String>``, ``<script>`` in prose
# about HTML) is text and is shown, escaped.
_INLINE_TAGS = frozenset(
    "a abbr b bdi bdo big cite code data del dfn em font i img ins kbd mark q s samp small span strike "
    "strong sub sup time tt u var wbr".split()
)
_BLOCK_TAGS = frozenset(
    "address article aside blockquote br caption center col colgroup dd details div dl dt figcaption "
    "figure footer h1 h2 h3 h4 h5 h6 header hr li main nav ol p picture pre section source summary "
    "table tbody td tfoot th thead tr ul".split()
)

# --- clean-up ---------------------------------------------------------------------------------------

_EMPTY_MARK = re.compile(r"\x02(\s*)\x03")
_BLANKS = re.compile(r"[^\S\n]+")
_LINE_BREAKS = re.compile(r" ?\n[ \n]*")


def markup_strip(text: str) -> str:
    """``text`` without its Markdown and HTML syntax, markers kept; blocks end in "\\n"."""
    if not text:
        return ""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines, protected = _blocks(text)
    text = _inline(lines, protected)
    text = _EMPTY_MARK.sub(r"\1", text)
    text = _BLANKS.sub(" ", text)
    text = _LINE_BREAKS.sub("\n", text)
    return text.strip()


def _markers_of(removed: str) -> str:
    """What is left of a removed piece of text: its markers, so every match keeps both its ends."""
    if MARK_START not in removed and MARK_STOP not in removed:
        return ""
    return "".join(char for char in removed if char in _MARKERS)


# --- blocks -------------------------------------------------------------------------------------------


def _is_separator_row(line: str) -> bool:
    """``|---|:--:|``: the line under a table's header."""
    return "|" in line and "-" in line and set(line) <= _SEPARATOR_ROW_CHARS


def _is_rule(line: str) -> bool:
    """``---``, ``***``, ``___`` (a thematic break) or ``===`` / ``---`` under a heading."""
    compact = line.replace(" ", "").replace("\t", "")
    kinds = set(compact)
    if len(kinds) != 1 or not kinds <= _RULE_CHARS:
        return False
    return compact[0] == "=" or len(compact) >= 3


def _heading_text(rest: str) -> str:
    """A heading's text without its optional closing ``#`` sequence (``## Tea ##``)."""
    body = rest.rstrip(" \t")
    without = body.rstrip("#")
    if without != body and (not without or without[-1] in " \t"):
        return without.rstrip(" \t")
    return body


def _table_row(line: str) -> str:
    """A table row's cells, without the pipes around and between them."""
    cells = [cell.strip() for cell in _CELL_PIPE.split(line.strip())]
    return CELL_SEPARATOR.join(cell for cell in cells if cell and cell not in _MARKERS)


def _blocks(text: str) -> tuple[str, list[tuple[int, int]]]:
    """Block syntax removed line by line: ``(text, code ranges the inline pass must leave alone)``.

    A line that starts a block (heading, list item, table row, code line) or follows a blank line
    is joined with "\\n"; a line that continues a paragraph or list item with one space.
    """
    parts: list[str] = []
    protected: list[tuple[int, int]] = []
    size = 0
    previous = ""  # kind of the last line written: "" (none, or a blank line since), "text", "block"
    fence = ""
    in_table = False
    lines = text.split("\n")

    def emit(piece: str, kind: str, code: bool = False) -> None:
        nonlocal size, previous
        joiner = "" if not parts else (" " if previous == "text" and kind == "text" else "\n")
        parts.append(joiner)
        size += len(joiner)
        if code:
            protected.append((size, size + len(piece)))
        parts.append(piece)
        size += len(piece)
        previous = "text" if kind in ("text", "item") else "block"

    for index, raw in enumerate(lines):
        if fence:
            stripped = raw.strip()
            if stripped.startswith(fence) and set(stripped) == {fence[0]}:
                fence, previous = "", ""
            elif stripped:
                emit(raw.strip(), "block", code=True)
            continue
        opening = _FENCE.match(raw)
        if opening:
            fence, previous = opening.group(1), ""
            continue
        quote = _QUOTE.match(raw)
        line = raw[quote.end() :] if quote else raw
        stripped = line.strip()
        if not stripped:
            previous, in_table = "", False
            continue
        if _is_separator_row(stripped):
            in_table = True
            continue
        if _is_rule(stripped):
            previous = ""
            continue
        following = lines[index + 1] if index + 1 < len(lines) else ""
        following = following[_quote_end(following) :].strip()
        if (
            stripped.startswith("|")
            or ("|" in stripped and (in_table or _is_separator_row(following)))
            or (stripped.endswith("|") and following.startswith("|"))  # a row the chunk starts inside
        ):
            in_table = True
            emit(_table_row(stripped.strip("|")), "block")
            continue
        in_table = False
        reference = _REFERENCE_DEFINITION.match(line)
        if reference:
            if not reference.group(1).startswith("^"):
                continue  # "[id]: https://… 'title'": where a reference link points, not text
            line = line[reference.end() :]  # a footnote's text without its label
        heading = _HEADING.match(line)
        if heading:
            text_of = _heading_text(line[heading.end() :]).strip()
            if text_of:
                emit(text_of, "block")
            previous = "block"
            continue
        item = _LIST_ITEM.match(line)
        if item:
            rest = line[item.end() :]
            box = _TASK_BOX.match(rest)
            rest = rest[box.end() :] if box else rest
            emit(_markers_of(line[: item.end()]) + rest.strip(), "item")
            continue
        emit(stripped, "text")
    return "".join(parts), protected


def _quote_end(line: str) -> int:
    quote = _QUOTE.match(line)
    return quote.end() if quote else 0


# --- inline -------------------------------------------------------------------------------------------


def _is_punctuation(char: str) -> bool:
    return char in string.punctuation or unicodedata.category(char)[0] in "PS"


def _visible_before(text: str, index: int) -> str:
    """The character before ``index`` that is not a marker; a space at the start."""
    for position in range(index - 1, max(index - 4, -1), -1):
        if text[position] not in _MARKERS:
            return text[position]
    return " "


def _visible_after(text: str, index: int) -> str:
    for position in range(index, min(index + 3, len(text))):
        if text[position] not in _MARKERS:
            return text[position]
    return " "


def _emphasis_delimiter(text: str, start: int, end: int) -> bool:
    """Whether the run ``text[start:end]`` of ``*``, ``_`` or ``~`` opens or closes emphasis.

    CommonMark's flanking rules: a run opens when a word follows it, closes when a word precedes
    it. ``_`` inside a word (``snake_case``) and a lone ``*`` between two words (``2*3``) are text.
    """
    before, after = _visible_before(text, start), _visible_after(text, end)
    opens = not after.isspace() and (not _is_punctuation(after) or before.isspace() or _is_punctuation(before))
    closes = not before.isspace() and (not _is_punctuation(before) or after.isspace() or _is_punctuation(after))
    if text[start] == "_":
        return opens != closes
    if opens and closes:
        return end - start >= 2
    return opens or closes


def _link_end(text: str, index: int) -> int:
    """Where the ``(destination "title")`` starting at ``index`` ends, or -1 if it is not one."""
    position = _SPACES.match(text, index + 1).end()
    position = _LINK_DESTINATION.match(text, position).end()
    after = _SPACES.match(text, position).end()
    title = _LINK_TITLE.match(text, after) if after > position else None
    if title:
        after = _SPACES.match(text, title.end()).end()
    return after + 1 if text.startswith(")", after) else -1


class _Edits:
    """Replacements of spans of the text, applied at once; removed spans leave their markers."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.spans: list[tuple[int, int, str]] = []

    def remove(self, start: int, end: int, replacement: str = "") -> None:
        self.spans.append((start, end, replacement + _markers_of(self.text[start:end])))

    def applied(self) -> str:
        out: list[str] = []
        position = 0
        for start, end, replacement in sorted(self.spans):
            if start < position:
                continue  # inside a span already replaced
            out.append(self.text[position:start])
            out.append(replacement)
            position = end
        out.append(self.text[position:])
        return "".join(out)


def _inline(text: str, protected: list[tuple[int, int]]) -> str:
    """Inline syntax removed in one left-to-right scan; code spans and blocks are kept verbatim."""
    edits = _Edits(text)
    brackets: list[tuple[int, int]] = []  # open "[" / "![": (start, end)
    runs = _backtick_runs(text)
    comment_ends = True  # until a "<!--" is found without "-->" after it
    block = 0
    position = 0
    while True:
        match = _INLINE.search(text, position)
        if match is None:
            break
        start, end = match.span()
        while block < len(protected) and protected[block][1] <= start:
            block += 1
        if block < len(protected) and protected[block][0] <= start:
            position = protected[block][1]
            continue
        token = match.group()
        position = end
        first = token[0]
        if first == "`":
            closing = runs.closing(start, end)
            edits.remove(start, end)
            if closing is not None:
                edits.remove(*closing)
                position = closing[1]
        elif first == "\\":
            edits.remove(start, start + 1)
        elif first in "![":
            brackets.append((start, end))
        elif first == "]":
            if brackets:
                position = _bracket_close(text, edits, brackets.pop(), start)
        elif first in "*_~":
            if _emphasis_delimiter(text, start, end):
                edits.remove(start, end)
        elif first == "<":
            comment_ends, position = _angle(text, edits, start, comment_ends)
        elif first == "&":
            entity = _ENTITY.match(text, start)
            if entity:
                value = html.unescape(entity.group())
                if value != entity.group() and all(ord(char) >= 32 for char in value):
                    edits.remove(start, entity.end(), value)
                position = entity.end() if entity else end
        else:  # a bare URL: its underscores and asterisks are not emphasis
            position = _BARE_URL.match(text, end).end()
    return edits.applied()


def _bracket_close(text: str, edits: _Edits, opening: tuple[int, int], index: int) -> int:
    """Handle the ``]`` at ``index`` closing ``opening``; return where the scan goes on."""
    after = index + 1
    if text.startswith("(", after):
        end = _link_end(text, after)
        if end != -1:  # [text](url) -> text; ![alt](src) -> alt
            edits.remove(*opening)
            edits.remove(index, end)
            return end
    elif text.startswith("[", after):
        reference = _LINK_REFERENCE.match(text, after)
        if reference:  # [text][id] and [text][] -> text
            edits.remove(*opening)
            edits.remove(index, reference.end())
            return reference.end()
    if text.startswith("[^", opening[0]) and index - opening[1] <= 40:
        edits.remove(opening[0], after)  # a footnote reference, [^1]
    return after


def _angle(text: str, edits: _Edits, start: int, comment_ends: bool) -> tuple[bool, int]:
    """Handle a ``<``: an HTML comment, an autolink or a formatting tag goes; anything else is text."""
    if text.startswith("<!--", start):
        end = text.find("-->", start + 4) if comment_ends else -1
        if end == -1:
            return False, start + 4
        edits.remove(start, end + 3)
        return True, end + 3
    autolink = _AUTOLINK.match(text, start)
    if autolink:
        edits.remove(start, start + 1)
        edits.remove(autolink.end() - 1, autolink.end())
        return comment_ends, autolink.end()
    tag = _TAG.match(text, start)
    if tag:
        name = tag.group(1).lower()
        if name in _INLINE_TAGS:
            edits.remove(start, tag.end())
        elif name in _BLOCK_TAGS:
            edits.remove(start, tag.end(), " ")
        return comment_ends, tag.end()
    return comment_ends, start + 1


class _BacktickRuns:
    """The runs of backticks in a text, for pairing a code span's opening run with its closing one."""

    def __init__(self, text: str) -> None:
        self.by_length: dict[int, list[int]] = {}
        for run in re.finditer(r"`+", text):
            self.by_length.setdefault(len(run.group()), []).append(run.start())
        self.next_index: dict[int, int] = {}

    def closing(self, start: int, end: int) -> tuple[int, int] | None:
        """The next run as long as ``text[start:end]`` after it, or None (then it is literal)."""
        length = end - start
        starts = self.by_length.get(length, [])
        index = self.next_index.get(length, 0)
        while index < len(starts) and starts[index] < end:
            index += 1  # each index is passed once: the scan moves forward only
        self.next_index[length] = index
        if index == len(starts):
            return None
        return starts[index], starts[index] + length


def _backtick_runs(text: str) -> _BacktickRuns:
    return _BacktickRuns(text)
