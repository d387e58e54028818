"""Search snippets: the passage around the query's words, cut where a reader expects, as HTML.

Every snippet shown (search results and ``/api/search/`` hits, Ask's passages, MCP hits, the
search page) is made in three steps, each in one place:

1. ``snippet_sql`` asks PostgreSQL's ``ts_headline`` for the chunk's whole text with the query's
   words (stemmed, stop words left out: the same lexemes keyword search uses) between
   SNIPPET_START and SNIPPET_STOP. The markers are control characters that never occur in
   ingested text (they are removed from the text before highlighting), so the text can be
   escaped first and the markers turned into ``<mark>`` tags last without any risk of injecting
   markup. A semantic hit gets its matches marked the same way when it holds the query's words.
2. ``snippet_cut`` removes Markdown and HTML syntax (``search.snippet_markup``; the stored
   chunk keeps it), picks the window holding the most of the query's words, and cuts it at a
   sentence boundary when one is near, else between words (inside a word only when a single
   "word" is longer than the window), with "…" wherever text was left out.
3. ``snippet_html`` escapes the text and turns the markers into balanced ``<mark>`` tags.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable

from django.db import connection

from documents.models import SEARCH_CONFIG, Chunk
from search.query_parser import query_parse
from search.snippet_markup import MARK_START, MARK_STOP, markup_strip

SNIPPET_START = MARK_START
SNIPPET_STOP = MARK_STOP

# A snippet is at most this many characters of text (about 45 words), plus a second, shorter
# fragment when the query's other words occur only further away.
SNIPPET_CHARS = 260
ELLIPSIS = "\u2026"

_MARKERS = re.compile("(\x02|\x03)")
_MARK_TAGS = re.compile("(<mark>|</mark>)")

# Where a sentence ends: . ! ? … (and closing quotes or brackets) before a space, or a block's end.
_SENTENCE_BOUNDARY = re.compile("[.!?\u2026]+[\"'\u201d\u2019)\\]]*[ \n]|\n")
_ABBREVIATION = re.compile(
    r"(?:^|[\s(])(?:e\.g|i\.e|etc|vs|cf|al|dr|mr|mrs|ms|prof|st|fig|no|approx|[A-Za-z])\.$", re.IGNORECASE
)
# A block that ends with one of these needs no separator before the next one.
_CLOSED = frozenset(".!?\u2026:;,\"'\u201d\u2019)]")
BLOCK_SEPARATOR = " \u2014 "
# Left off a cut edge: a separator or a clause's punctuation does not start or end a snippet.
_EDGE_CHARS = " \n\u00b7\u2014,;:"


def keyword_snippets(chunk_ids: Iterable[str], query: str, *, length: int = SNIPPET_CHARS) -> dict[str, str]:
    """``{chunk_id: snippet}`` as ``snippet_cut`` gives it (text, matches between the markers).

    Call it for the page of results being shown only: ``ts_headline`` re-parses each text. Works
    for any chunk (a semantic hit that shares no word gets the start of its text). Markers are
    control characters, so escape first and mark second: ``snippet_html`` does exactly that.
    """
    ids = [str(pk) for pk in chunk_ids]
    if not ids:
        return {}
    expression, params = snippet_sql(query)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT c.id, {expression} FROM {Chunk._meta.db_table} c WHERE c.id = ANY(%(ids)s::uuid[])",
            {**params, "ids": ids},
        )
        return {str(pk): snippet_cut(marked or "", length) for pk, marked in cursor.fetchall()}


def snippet_sql(query: str, *, text_sql: str = "c.text") -> tuple[str, dict[str, object]]:
    """A SQL expression (and its parameters): ``text_sql`` whole, the query's words between the markers.

    The query's lexemes become the OR tsquery inside the same statement (an uncorrelated
    subquery, computed once), quoted exactly as ``search.keyword_stats.lexeme_tsquery`` quotes them, so a caller can
    fetch snippets together with the rows they belong to: one round trip instead of three
    (search.selectors._page; bench/results/search_scale.md). ``snippet_cut`` chooses the window:
    ts_headline's own fragments start and end wherever its word count runs out.
    """
    options = f'StartSel="{SNIPPET_START}", StopSel="{SNIPPET_STOP}", HighlightAll=true'
    # chr(39) is a quote, chr(92) a backslash: 'lexeme' with ' doubled and \ escaped. An empty
    # query would make ts_headline complain; a lexeme that occurs nowhere (\x01) marks nothing.
    tsquery = (
        "(SELECT coalesce(string_agg(chr(39) || replace(replace(l, chr(92), chr(92) || chr(92)), chr(39), "
        "chr(39) || chr(39)) || chr(39), ' | ' ORDER BY l), %(snippet_nomatch)s)::tsquery "
        "FROM unnest(tsvector_to_array(to_tsvector(%(snippet_config)s::regconfig, %(snippet_text)s))) AS l)"
    )
    expression = (
        f"ts_headline(%(snippet_config)s::regconfig, translate({text_sql}, %(snippet_markers)s, ''), {tsquery}, "
        "%(snippet_options)s)"
    )
    params = {
        "snippet_config": SEARCH_CONFIG,
        "snippet_markers": SNIPPET_START + SNIPPET_STOP,
        "snippet_nomatch": "'\u0001'",
        "snippet_text": query_parse(query).ranking_text,
        "snippet_options": options,
    }
    return expression, params


# --- cutting ------------------------------------------------------------------------------------


def snippet_cut(marked: str, length: int = SNIPPET_CHARS) -> str:
    """The snippet of a text whose matches are between the markers: markup gone, cut for reading.

    The window holds the most distinct matched words (the text's opening when nothing matched),
    starts at the start of their sentence when that is near and ends at a sentence's end when
    one is late enough, else at word boundaries. A query word found only outside it adds a
    second, shorter fragment. "…" stands where text was left out, also before a chunk that
    begins inside a sentence. Blocks (headings, list items, table rows) are joined with " — "
    unless punctuation already ends them. Result: text with matches between the markers.
    """
    text, spans = _unmarked(markup_strip(marked or ""))
    if not text:
        return ""
    windows = _windows(text, spans, max(int(length), 20))
    pieces: list[str] = []
    if windows[0][0] > 0 or text[0].islower():
        pieces.append(ELLIPSIS + " ")
    for index, (start, end) in enumerate(windows):
        if index:
            pieces.append(f" {ELLIPSIS} ")
        pieces.append(_rendered(text, spans, start, end))
    if windows[-1][1] < len(text):
        pieces.append(" " + ELLIPSIS)
    return "".join(pieces)


def _unmarked(marked: str) -> tuple[str, list[tuple[int, int]]]:
    """``(text without markers, [(start, end) of each match])``; stray markers are ignored."""
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    size = 0
    opened: int | None = None
    for piece in _MARKERS.split(marked):
        if piece == SNIPPET_START:
            opened = size if opened is None else opened
        elif piece == SNIPPET_STOP:
            if opened is not None and size > opened:
                spans.append((opened, size))
            opened = None
        elif piece:
            parts.append(piece)
            size += len(piece)
    if opened is not None and size > opened:
        spans.append((opened, size))
    return "".join(parts), spans


def _term(word: str) -> str:
    """A match as a word to count once (``Tea`` and ``teas`` are one)."""
    word = word.casefold()
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def _windows(text: str, spans: list[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """The one or two ``(start, end)`` windows of ``text`` a snippet shows, in text order."""
    if len(text) <= length:
        return [(0, len(text))]
    if not spans:
        return [_window(text, 0, 0, length)]
    terms = [_term(text[low:high]) for low, high in spans]
    first, last = _best_cluster(spans, terms, length * 4 // 5)
    window = _window(text, spans[first][0], spans[last - 1][1], length)
    inside = [window[0] <= low and high <= window[1] for low, high in spans]
    covered = {term for term, seen in zip(terms, inside, strict=True) if seen}
    missing = next(
        (span for span, term, seen in zip(spans, terms, inside, strict=True) if term not in covered and not seen),
        None,
    )
    if missing is None:
        return [window]
    extra = _window(text, missing[0], missing[1], length // 2)
    before, after = sorted([window, extra])
    if after[0] < before[1]:
        return [window]  # they overlap: the first says enough
    if not text[before[1] : after[0]].strip():
        return [(before[0], after[1])]  # only a space between them: one window
    return [before, after]


def _best_cluster(spans: list[tuple[int, int]], terms: list[str], width: int) -> tuple[int, int]:
    """``(first, last + 1)``: the run of matches within ``width`` characters with the most distinct
    words (then the most matches; the earliest on a tie), by one sliding pass."""
    counts: dict[str, int] = {}
    best, best_score = (0, 1), (0, 0)
    last = 0
    for first in range(len(spans)):
        while last < len(spans) and (last == first or spans[last][1] - spans[first][0] <= width):
            counts[terms[last]] = counts.get(terms[last], 0) + 1
            last += 1
        score = (len(counts), last - first)
        if score > best_score:
            best, best_score = (first, last), score
        counts[terms[first]] -= 1
        if not counts[terms[first]]:
            del counts[terms[first]]
    return best


def _window(text: str, low: int, high: int, length: int) -> tuple[int, int]:
    """A window of at most ``length`` characters holding ``text[low:high]``, cut between words."""
    start = _window_start(text, low, high, length)
    end = _window_end(text, start, high, length)
    if end == len(text) and end - start < length * 3 // 5:
        start = _earlier_start(text, start, end - length)  # matches near the end: more before them
    trimmed_start, trimmed_end = start, end
    while trimmed_start < trimmed_end and text[trimmed_start] in _EDGE_CHARS:
        trimmed_start += 1
    while trimmed_end > trimmed_start and text[trimmed_end - 1] in _EDGE_CHARS:
        trimmed_end -= 1
    return (trimmed_start, trimmed_end) if trimmed_start < trimmed_end else (start, end)


def _is_sentence_start(text: str, boundary: re.Match) -> bool:
    """Whether a boundary match ends a sentence: a block's end does; "." and the like do unless
    they follow "e.g." or an initial or come before a lower-case word."""
    if boundary.group() == "\n":
        return True
    after = boundary.end()
    if after < len(text) and text[after].islower():
        return False
    head = text[max(0, boundary.start() - 8) : boundary.start() + 1]
    return not _ABBREVIATION.search(head)


def _window_start(text: str, low: int, high: int, length: int) -> int:
    # Any earlier and the matches would not fit with a fifth of the window after them.
    earliest = max(0, high - max(length - length // 5, high - low))
    if low <= length // 2 and earliest == 0:
        return 0  # the opening is near enough: show it
    reach = max(earliest, low - length // 2)
    sentence = None
    for boundary in _SENTENCE_BOUNDARY.finditer(text, reach, low):
        if boundary.end() <= low and _is_sentence_start(text, boundary):
            sentence = boundary.end()
    if sentence is not None:
        return sentence  # the start of the sentence the first match is in
    target = max(earliest, low - min(length // 5, max(length - (high - low), 0) // 2))
    if target == 0:
        return 0
    for position in range(target, low + 1):  # the first word start at or after target
        if text[position - 1].isspace() and not text[position].isspace():
            return position
    for position in range(target - 1, earliest, -1):  # else the last one before it
        if text[position - 1].isspace() and not text[position].isspace():
            return position
    return target  # a single "word" longer than the window: cut inside it


def _earlier_start(text: str, start: int, earliest: int) -> int:
    """The first sentence start from ``earliest`` on (the text's start if that is in reach), else ``start``."""
    if earliest <= 0:
        return 0
    for boundary in _SENTENCE_BOUNDARY.finditer(text, earliest, start):
        if _is_sentence_start(text, boundary):
            return boundary.end()
    return start


def _window_end(text: str, start: int, high: int, length: int) -> int:
    limit = start + length
    if limit >= len(text):
        return len(text)
    floor = max(high, start + length * 3 // 5)
    sentence = None
    for boundary in _SENTENCE_BOUNDARY.finditer(text, max(start, floor - 4), limit + 1):
        end = boundary.end() - 1
        if floor <= end <= limit and _is_sentence_start(text, boundary):
            sentence = end
    if sentence is not None:
        return sentence
    space = max(text.rfind(" ", high, limit + 1), text.rfind("\n", high, limit + 1))
    if space > start:
        return space
    return limit  # a single "word" longer than the window: cut inside it


def _rendered(text: str, spans: list[tuple[int, int]], start: int, end: int) -> str:
    """``text[start:end]`` with its matches between the markers and its blocks joined."""
    out: list[str] = []
    position = start
    for low, high in spans:
        low, high = max(low, start), min(high, end)
        if low >= high or low < position:
            continue
        out.append(_joined(text, position, low))
        out.append(SNIPPET_START + _joined(text, low, high) + SNIPPET_STOP)
        position = high
    out.append(_joined(text, position, end))
    return "".join(out)


def _joined(text: str, start: int, end: int) -> str:
    """``text[start:end]`` with each block boundary a space after punctuation, else " — "."""
    out: list[str] = []
    position = start
    while (newline := text.find("\n", position, end)) != -1:
        out.append(text[position:newline])
        closed = newline > 0 and text[newline - 1] in _CLOSED
        out.append(" " if closed else BLOCK_SEPARATOR)
        position = newline + 1
    out.append(text[position:end])
    return "".join(out)


# --- HTML ---------------------------------------------------------------------------------------


def snippet_html(snippet: str) -> str:
    """A snippet (text, matches between the markers) as HTML in which only ``<mark>`` is markup.

    Everything else is escaped; the marks come out balanced whatever the markers were (a stray
    stop is dropped, an open mark is closed at the end).
    """
    out: list[str] = []
    open_mark = False
    for piece in _MARKERS.split(snippet or ""):
        if piece == SNIPPET_START:
            if not open_mark:
                out.append("<mark>")
                open_mark = True
        elif piece == SNIPPET_STOP:
            if open_mark:
                out.append("</mark>")
                open_mark = False
        elif piece:
            out.append(html.escape(piece))
    if open_mark:
        out.append("</mark>")
    return "".join(out)


def snippet_safe_html(snippet: str) -> str:
    """A snippet that is already HTML (``SearchResult.snippet``, a stored passage) made safe again.

    Its ``<mark>`` tags become markers and everything else is unescaped (so escaped text is not
    escaped twice), then ``snippet_html`` builds it anew: a template may mark the result safe
    whatever happened to the snippet on its way.
    """
    pieces = _MARK_TAGS.split(snippet or "")
    marked = {"<mark>": SNIPPET_START, "</mark>": SNIPPET_STOP}
    return snippet_html("".join(marked.get(piece) or html.unescape(piece) for piece in pieces))


def snippet_from_marked(marked: str, length: int = SNIPPET_CHARS) -> str:
    """``ts_headline``'s marked text (``snippet_sql``) as the snippet's HTML: cut, then escaped and marked."""
    return snippet_html(snippet_cut(marked, length))


def snippet_plain(text: str, length: int = SNIPPET_CHARS) -> str:
    """The opening of ``text`` (it has no matches) as a snippet's HTML, cut like every snippet."""
    return snippet_from_marked(snippet_text(text or ""), length)


def snippet_text(snippet: str) -> str:
    """A snippet as plain text, markers removed."""
    return snippet.replace(SNIPPET_START, "").replace(SNIPPET_STOP, "")
