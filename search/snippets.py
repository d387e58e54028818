"""Search snippets: the passage around the query's words, and the one way it becomes HTML.

``keyword_snippets`` / ``snippet_sql`` ask PostgreSQL's ``ts_headline`` for the text around the
query's words, with the matches between SNIPPET_START and SNIPPET_STOP: control characters that
never occur in ingested text (they are removed from the text before highlighting), so the text
can be escaped first and the markers turned into ``<mark>`` tags second without any risk of
injecting markup. ``snippet_html`` is the only place that does that; every snippet shown (search
results, Ask's passages, the search page) is built by it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable

from django.db import connection

from documents.models import SEARCH_CONFIG, Chunk
from search.query_parser import query_parse

SNIPPET_START = "\x02"
SNIPPET_STOP = "\x03"

_MARKERS = re.compile("(\x02|\x03)")
_MARK_TAGS = re.compile("(<mark>|</mark>)")


def keyword_snippets(
    chunk_ids: Iterable[str], query: str, *, max_words: int = 35, min_words: int = 15, max_fragments: int = 2
) -> dict[str, str]:
    """``{chunk_id: snippet}`` with the query's words between SNIPPET_START and SNIPPET_STOP.

    Call it for the page of results being shown only: ``ts_headline`` re-parses each text. Works
    for any chunk (a semantic hit that shares no word gets the start of its text). Markers are
    control characters, so escape first and mark second: ``snippet_html`` does exactly that.
    """
    ids = [str(pk) for pk in chunk_ids]
    if not ids:
        return {}
    expression, params = snippet_sql(query, max_words=max_words, min_words=min_words, max_fragments=max_fragments)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT c.id, {expression} FROM {Chunk._meta.db_table} c WHERE c.id = ANY(%(ids)s::uuid[])",
            {**params, "ids": ids},
        )
        return {str(pk): snippet for pk, snippet in cursor.fetchall()}


def snippet_sql(
    query: str, *, text_sql: str = "c.text", max_words: int = 35, min_words: int = 15, max_fragments: int = 2
) -> tuple[str, dict[str, object]]:
    """A SQL expression (and its parameters) giving ``keyword_snippets``' snippet of ``text_sql``.

    The query's lexemes become the OR tsquery inside the same statement (an uncorrelated
    subquery, computed once), quoted exactly as ``search.keyword_stats.lexeme_tsquery`` quotes them, so a caller can
    fetch snippets together with the rows they belong to: one round trip instead of three
    (search.selectors._page; bench/results/search_scale.md).
    """
    options = (
        f'StartSel="{SNIPPET_START}", StopSel="{SNIPPET_STOP}", MaxWords={int(max_words)}, '
        f'MinWords={int(min_words)}, ShortWord=3, MaxFragments={int(max_fragments)}, FragmentDelimiter=" … "'
    )
    # chr(39) is a quote, chr(92) a backslash: 'lexeme' with ' doubled and \ escaped. An empty
    # query would make ts_headline complain; a lexeme that occurs nowhere (\x01) gives the text's
    # opening words instead, which is what a snippet without matches should show.
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


def snippet_plain(text: str, length: int = 240) -> str:
    """The opening words of ``text`` as a snippet without matches, as HTML (cut at a word)."""
    text = " ".join(snippet_text(text).split())
    return snippet_html(text if len(text) <= length else text[:length].rsplit(" ", 1)[0] + " …")


def snippet_text(snippet: str) -> str:
    """A snippet as plain text, markers removed."""
    return snippet.replace(SNIPPET_START, "").replace(SNIPPET_STOP, "")
