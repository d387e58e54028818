"""Snippets: ts_headline's passage around the query's words, and the one way it becomes HTML."""

from __future__ import annotations

import pytest

from documents.tests.factories import document_with_chunk, source_create
from search.snippets import (
    SNIPPET_START,
    SNIPPET_STOP,
    keyword_snippets,
    snippet_html,
    snippet_plain,
    snippet_safe_html,
    snippet_text,
)


@pytest.mark.django_db
def test_snippets_mark_query_words_and_are_safe_to_render():
    source = source_create("web")
    chunk = document_with_chunk(
        source, "Markup", "Compare a < b & c in coffee code;\x02 markers\x03 never leak <script>x</script>."
    )
    snippets = keyword_snippets([str(chunk.id)], "coffee")
    snippet = snippets[str(chunk.id)]
    assert f"{SNIPPET_START}coffee{SNIPPET_STOP}" in snippet
    assert snippet.count(SNIPPET_START) == 1 and snippet.count(SNIPPET_STOP) == 1
    rendered = snippet_html(snippet)
    assert "<mark>coffee</mark>" in rendered
    assert "&lt;" in rendered and "&amp;" in rendered and "<script>" not in rendered
    assert SNIPPET_START not in snippet_text(snippet)


@pytest.mark.django_db
def test_snippets_for_chunks_without_matches_show_their_opening():
    text = "Table grapes are eaten fresh; wine grapes are smaller, with thicker skins and more seeds."
    chunk = document_with_chunk(source_create("food"), "Food", text)
    snippets = keyword_snippets([chunk.id], "the of")
    assert snippets[str(chunk.id)].startswith("Table grapes")
    assert keyword_snippets([], "coffee") == {}


def test_snippets_can_carry_no_markup_but_mark():
    html = snippet_safe_html('<script>alert(1)</script> &amp; <mark>tea</mark> \x02green\x03 <b onclick="x">b</b>')
    assert html == (
        "&lt;script&gt;alert(1)&lt;/script&gt; &amp; <mark>tea</mark> <mark>green</mark> "
        "&lt;b onclick=&quot;x&quot;&gt;b&lt;/b&gt;"
    )
    assert snippet_safe_html("<mark>unclosed") == "<mark>unclosed</mark>"


def test_a_snippet_made_safe_twice_reads_the_same():
    # Search results carry HTML snippets and Ask's passages and the page make them safe again:
    # escaped text must not come out escaped twice.
    once = snippet_html("a < b & \x02tea\x03 \"quoted\" 'single'")
    assert once == "a &lt; b &amp; <mark>tea</mark> &quot;quoted&quot; &#x27;single&#x27;"
    assert snippet_safe_html(once) == once


def test_unbalanced_markers_still_give_balanced_marks():
    assert snippet_html("\x03a\x02b\x02c") == "a<mark>bc</mark>"


def test_a_plain_snippet_is_the_escaped_opening_cut_at_a_word():
    text = "<b>Bold</b> claims\x02 " + "word " * 100
    snippet = snippet_plain(text, length=40)
    assert snippet.startswith("&lt;b&gt;Bold&lt;/b&gt; claims word")
    assert snippet.endswith(" …") and "<mark>" not in snippet and "\x02" not in snippet
    assert snippet_plain("short  text\n here") == "short text here"
