"""Snippets: the passage around the query's words, without markup, cut where a reader expects, as HTML.

Unit tests of the stripper (``search.snippet_markup``) and the cutter (``search.snippets``),
then through the real interfaces: a Markdown file uploaded to /api/documents/, found through
/api/search/ in each mode, the search page and /api/ask/.
"""

from __future__ import annotations

import html
import random
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from documents.tests.factories import document_with_chunk, source_create
from search.snippet_markup import markup_strip
from search.snippets import (
    ELLIPSIS,
    SNIPPET_CHARS,
    SNIPPET_START,
    SNIPPET_STOP,
    keyword_snippets,
    snippet_cut,
    snippet_from_marked,
    snippet_html,
    snippet_plain,
    snippet_safe_html,
    snippet_text,
)

S, E = SNIPPET_START, SNIPPET_STOP


def marks_balanced(snippet: str) -> bool:
    """Markers alternate start, stop, start, stop… and every mark holds some text."""
    markers = re.findall("[\x02\x03]", snippet)
    return markers == [S, E] * (len(markers) // 2) and f"{S}{E}" not in snippet


def words_of(snippet: str) -> list[str]:
    return re.findall(r"\w+", snippet_text(snippet))


def fragments(snippet: str) -> list[str]:
    """The pieces of text a snippet shows (between the "…" that stand for what was left out)."""
    return [part.strip() for part in snippet_text(snippet).split(ELLIPSIS) if part.strip()]


def assert_whole_words(snippet: str, source: str) -> None:
    """Each fragment starts and ends with a word that is a whole word of ``source``."""
    for fragment in fragments(snippet):
        words = re.findall(r"\w+", fragment)
        for word in (words[0], words[-1]) if words else ():
            assert re.search(rf"(?<!\w){re.escape(word)}(?!\w)", source), (word, fragment)


# --- stripping markup -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("markdown", "readable"),
    [
        ("## Brewing tea ##", "Brewing tea"),
        ("Tea is **steamed** or __pan-fired__, *not* _rolled_.", "Tea is steamed or pan-fired, not rolled."),
        ("Run `manage.py migrate` first.", "Run manage.py migrate first."),
        ("See [the guide](https://example.com/a_(b) 'Title') now.", "See the guide now."),
        ("A cup: ![green tea](img/cup.png).", "A cup: green tea."),
        ("[![badge](b.svg)](https://ci.example.com)", "badge"),
        ("See [the guide][ref] and [this][]. [ref]: no", "See the guide and this. [ref]: no"),
        ("Text[^1] with a note.", "Text with a note."),
        ("H<sub>2</sub>O is <b>water</b><br>and <em>more</em>.", "H2O is water and more."),
        ("<!-- hidden -->Shown", "Shown"),
        (
            "Write to <mailto:a@example.com> or <https://example.com>.",
            "Write to mailto:a@example.com or https://example.com.",
        ),
        ("Fish &amp; chips &lt;3 &nbsp;", "Fish & chips <3"),
        ("snake_case and __init__ and 2*3*4 and a * b", "snake_case and init and 2*3*4 and a * b"),
        ("Use `__init__` and `a|b` here", "Use __init__ and a|b here"),
        (r"Not \*emphasis\* or \[a link\]", "Not *emphasis* or [a link]"),
        ("~~old~~ new", "old new"),
        ("https://example.com/some_path_here/_x_ stays", "https://example.com/some_path_here/_x_ stays"),
        ("List<String> and <script>alert(1)</script>", "List<String> and <script>alert(1)</script>"),
    ],
)
def test_inline_markup_is_removed_and_the_words_kept(markdown, readable):
    assert markup_strip(markdown) == readable


def test_block_markup_is_removed_and_blocks_end_in_a_line_break():
    markdown = (
        "# Tea handbook\n\nGreen tea is steamed\nsoon after picking.\n\n> A quote\n> across lines\n\n"
        "- first item\n  continued\n* second\n+ third\n1. one\n2) two\n- [x] done\n\n"
        "| Tea | Temperature |\n|:---|---:|\n| Green | 80 °C |\n\nName | Value\n--- | ---\nA | 1\n\n"
        "Setext heading\n==============\n\n***\n\n```python\nx = a**2  # [not](a link)\n```\n\n"
        "[ref]: https://example.com 'Title'\n"
    )
    assert markup_strip(markdown).split("\n") == [
        "Tea handbook",
        "Green tea is steamed soon after picking.",
        "A quote across lines",
        "first item continued",
        "second",
        "third",
        "one",
        "two",
        "done",
        "Tea · Temperature",
        "Green · 80 °C",
        "Name · Value",
        "A · 1",
        "Setext heading",
        "x = a**2 # [not](a link)",
    ]


@pytest.mark.parametrize(
    ("marked", "readable"),
    [
        (f"See [the {S}guide{E}](https://example.com/guide) now", f"See the {S}guide{E} now"),
        (f"It is **{S}steamed{E}** and *{S}rolled{E}*", f"It is {S}steamed{E} and {S}rolled{E}"),
        (f"## {S}Brewing{E}", f"{S}Brewing{E}"),
        (f"| {S}Tea{E} | x |\n|---|---|", f"{S}Tea{E} · x"),
        (f"{S}1{E}. first step", f"{S}{E}first step"),  # the list number goes, its empty mark with it
        (f"[a](https://x.org/{S}tea{E}) b", "a b"),  # a match in a link's address goes with it
        (f"`{S}code{E}` and ![{S}cup{E}](c.png)", f"{S}code{E} and {S}cup{E}"),
        (f"<b>{S}bold{E}</b>", f"{S}bold{E}"),
    ],
)
def test_matches_keep_their_markers_on_their_words(marked, readable):
    stripped = markup_strip(marked)
    assert stripped == readable.replace(f"{S}{E}", "")
    assert marks_balanced(stripped)


@pytest.mark.parametrize(
    "pathological",
    [
        "*" * 100_000,
        "[" * 50_000 + "]" * 50_000,
        "[](" * 34_000,
        "(" * 100_000,
        "`" * 100_000,
        "`a" * 50_000,
        "".join("`" * n + "x" for n in range(1, 440)),
        "](" + " " * 100_000,
        '[a](x "' + "a" * 100_000,
        "<!--" * 25_000,
        "<a " * 33_000,
        "_a" * 50_000,
        "**a" * 33_000,
        "*[(`" * 25_000,
        "&#" * 50_000,
        "| " * 50_000 + "\n|---|\n" + "| a " * 10_000,
        " " * 100_000 + "#",
        "> " * 50_000,
        "\\" * 100_000,
        ("[" + S + "a" + E + "](" + "x" * 10) * 5_000,
    ],
)
def test_pathological_markup_completes(pathological):
    # Each must finish in a normal test run: no backtracking that grows faster than the text.
    stripped = markup_strip(pathological)
    snippet = snippet_cut(pathological)
    assert len(snippet_text(snippet)) <= SNIPPET_CHARS + 10
    assert marks_balanced(snippet) or not stripped


# --- cutting --------------------------------------------------------------------------------------

PROSE = (
    "Tea is grown in many countries. "
    + "Plantations on hillsides need careful drainage and shade trees for the young bushes. " * 4
    + f"Green {S}tea{E} is steamed soon after picking, which stops oxidation and keeps the leaves green. "
    + "Pickers take the bud and two leaves in the early morning when it is cool. " * 4
    + "The factory dries them within hours."
)


def test_a_snippet_starts_at_the_sentence_of_its_match_and_ends_at_a_sentence():
    snippet = snippet_cut(PROSE)
    text = snippet_text(snippet)
    assert text.startswith(f"{ELLIPSIS} Green tea is steamed")
    assert text.endswith(f". {ELLIPSIS}") and len(text) <= SNIPPET_CHARS + 4
    assert f"{S}tea{E}" in snippet and marks_balanced(snippet)


def test_a_list_item_is_a_boundary_even_in_lower_case_and_a_late_match_gets_context_before_it():
    text = (
        "An intro sentence that says little. " * 10
        + f"\n\n- water at 80 degrees\n- steep in a warm {S}pot{E} with a lid"
    )
    snippet = snippet_text(snippet_cut(text))
    # A match near the end: the window reaches back to the earliest sentence start that fits.
    assert snippet.startswith(f"{ELLIPSIS} An intro sentence") and len(snippet) <= SNIPPET_CHARS + 2
    assert snippet.endswith("says little. water at 80 degrees \u2014 steep in a warm pot with a lid")


def test_a_snippet_without_matches_is_the_opening():
    snippet = snippet_cut(snippet_text(PROSE))
    assert snippet.startswith("Tea is grown in many countries.") and snippet.endswith(ELLIPSIS)
    assert S not in snippet


def test_a_short_text_is_shown_whole_and_a_chunk_cut_mid_sentence_starts_with_an_ellipsis():
    assert snippet_cut(f"Green {S}tea{E}.") == f"Green {S}tea{E}."
    assert snippet_cut("the leaves are rolled.") == f"{ELLIPSIS} the leaves are rolled."


def test_words_far_apart_get_a_second_fragment():
    text = PROSE + " " + "Filler sentence about nothing much at all. " * 10 + f"Black {S}oolong{E} is rolled."
    snippet = snippet_cut(text)
    assert len(fragments(snippet)) == 2
    assert f"{S}tea{E}" in snippet and f"{S}oolong{E}" in snippet and marks_balanced(snippet)
    assert_whole_words(snippet, snippet_text(text))


def test_an_overlong_word_is_cut_inside_with_an_ellipsis():
    snippet = snippet_cut("https://example.com/" + "a" * 1000 + " end")
    assert snippet.endswith(f"aaa {ELLIPSIS}") and len(snippet) <= SNIPPET_CHARS + 4
    marked = snippet_cut(f"Word {S}{'x' * 1000}{E} end")
    assert marks_balanced(marked) and marked.endswith(f"xx{E} {ELLIPSIS}") and len(marked) <= SNIPPET_CHARS + 6
    assert snippet_cut(", ; " * 100).startswith(", ;")  # nothing but punctuation: shown, not emptied


def test_a_window_never_starts_or_ends_inside_a_word():
    # Property-like: random texts of words, punctuation, Markdown and matches, many lengths.
    rng = random.Random(20)
    vocabulary = "tea leaf green oxidation steamed water boiling temperature minutes cup pot a of the".split()
    decorations = ["{}", "**{}**", "*{}*", "`{}`", "[{}](https://x.org/{})", "_{}_", "{},", "{}.", "{}!"]
    for _ in range(300):
        words = []
        for _ in range(rng.randint(1, 120)):
            word = rng.choice(vocabulary)
            if rng.random() < 0.15:
                word = f"{S}{word}{E}"
            words.append(rng.choice(decorations).format(word, "p"))
            if rng.random() < 0.05:
                words.append(rng.choice(["\n\n## Heading\n\n", "\n- ", "\n| a | b |\n|---|---|\n| c | d |\n"]))
        marked = " ".join(words)
        source = snippet_text(markup_strip(marked))
        snippet = snippet_cut(marked, rng.randint(20, 400))
        assert marks_balanced(snippet), snippet
        for syntax in ("**", "](", "`", "##", "|", "_"):
            assert syntax not in snippet, (syntax, snippet)
        assert_whole_words(snippet, source)
        for fragment in fragments(snippet):
            assert fragment.replace(" \u2014 ", " ") in source.replace("\n", " "), (fragment, source)


# --- HTML -----------------------------------------------------------------------------------------


def test_text_is_escaped_and_only_marks_are_markup():
    snippet = snippet_from_marked(f'Compare a < b & c: <script>x</script> **{S}tea{E}** "q"')
    assert snippet == "Compare a &lt; b &amp; c: &lt;script&gt;x&lt;/script&gt; <mark>tea</mark> &quot;q&quot;"


def test_an_entity_cannot_smuggle_a_marker_or_a_tag():
    snippet = snippet_from_marked("a &#2;b&#3; &lt;script&gt;")
    assert "<mark>" not in snippet and "&lt;script&gt;" in snippet


def test_snippets_can_carry_no_markup_but_mark():
    html_ = snippet_safe_html('<script>alert(1)</script> &amp; <mark>tea</mark> \x02green\x03 <b onclick="x">b</b>')
    assert html_ == (
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
    assert snippet_from_marked("\x03A\x02b\x02c") == "A<mark>bc</mark>"


def test_a_plain_snippet_is_the_opening_without_markup_cut_at_a_word():
    text = "<b>Bold</b> claims\x02 " + "word " * 100
    snippet = snippet_plain(text, length=40)
    assert snippet.startswith("Bold claims word")
    assert snippet.endswith(f"word {ELLIPSIS}") and "<mark>" not in snippet and "\x02" not in snippet
    assert snippet_plain("Short  text\n here") == "Short text here"


# --- ts_headline ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_snippets_mark_query_words_and_are_safe_to_render():
    source = source_create("web")
    chunk = document_with_chunk(
        source, "Markup", "Compare a < b & c in coffee code;\x02 markers\x03 never leak <script>x</script>."
    )
    snippet = keyword_snippets([str(chunk.id)], "coffee")[str(chunk.id)]
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
    assert snippets[str(chunk.id)] == text
    assert keyword_snippets([], "coffee") == {}


@pytest.mark.django_db
def test_stemmed_words_are_marked_and_stop_words_are_not():
    text = "The teas of the valley are brewed in the morning; brewing takes minutes. " * 6
    chunk = document_with_chunk(source_create("food"), "Food", text)
    snippet = keyword_snippets([chunk.id], "what is the brew of a tea")[str(chunk.id)]
    marked = set(re.findall(f"{S}([^{E}]*){E}", snippet))
    assert marked == {"teas", "brewed", "brewing"}


# --- through the real interfaces ------------------------------------------------------------------

ESPRESSO = b"""# Espresso handbook

## Grinding

Espresso starts with beans roasted for it, rested a week after roasting. The grinder matters more than the
machine: a burr grinder cuts even particles, a blade grinder smashes them into dust and boulders. Read
[the **grinder calibration** guide](https://example.com/guides/grinder-calibration_v2.html "Calibration")
before the first shot, and keep the burrs clean with a brush after every session. Uneven particles let the
water find channels through the puck, and the shot then tastes sour and bitter at once. Weigh every dose on
a scale that reads tenths of a gram, because scoops vary by a third with the roast.

## Recipes

Every recipe below uses the same basket and dose; only the yield and the time change.

| Drink | Dose | Yield | Time |
|---|---:|---:|---:|
| Ristretto | 18 g | 27 g | 25 s |
| Espresso | 18 g | 36 g | 28 s |
| Lungo | 18 g | 54 g | 32 s |

A *ristretto* is a short pull: the same dose with half the water, sweeter and thicker than a normal shot.
A lungo runs longer and tastes thinner and more bitter. Milk drinks start from a normal shot.
"""


def readable_text(snippet: str) -> str:
    return html.unescape(re.sub("</?mark>", "", snippet))


def assert_readable_snippet(snippet: str, word: str) -> None:
    """A hit's HTML snippet: the word marked, no Markdown, whole words at both ends, "…" where cut."""
    assert re.search(rf"<mark>{word}</mark>", snippet, re.IGNORECASE), snippet
    text = readable_text(snippet)
    for syntax in ("**", "##", "](", "|", "`", "[", "---"):
        assert syntax not in text, (syntax, snippet)
    assert_whole_words(text, ESPRESSO.decode())
    assert len(text) <= SNIPPET_CHARS + 50


@pytest.fixture
def espresso(api, fresh_store, run_commit_hooks):
    with run_commit_hooks():
        upload = SimpleUploadedFile("espresso.md", ESPRESSO, content_type="text/markdown")
        response = api.post("/api/documents/", {"file": upload, "source": "kitchen"})
    assert response.status_code == 201, response.content
    return response.json()


@pytest.mark.slow
@pytest.mark.django_db
@pytest.mark.parametrize("mode", ["keyword", "semantic", "hybrid"])
@pytest.mark.parametrize(("query", "word"), [("grinder calibration", "calibration"), ("ristretto", "ristretto")])
def test_search_hits_show_readable_snippets_in_every_mode(api, espresso, mode, query, word):
    response = api.get("/api/search/", {"q": query, "mode": mode})
    assert response.status_code == 200, response.content
    hit = response.json()["results"][0]
    assert hit["document_id"] == espresso["id"]
    assert_readable_snippet(hit["snippet"], word)
    assert ELLIPSIS in hit["snippet"]  # the section is longer than a snippet: something was left out


@pytest.mark.slow
@pytest.mark.django_db
def test_a_semantic_hit_marks_the_query_words_it_holds_but_not_stop_words(api, espresso):
    hit = api.get("/api/search/", {"q": "what is the ristretto", "mode": "semantic"}).json()["results"][0]
    assert "<mark>Ristretto</mark>" in hit["snippet"] or "<mark>ristretto</mark>" in hit["snippet"]
    marked = {m.casefold() for m in re.findall(r"<mark>([^<]*)</mark>", hit["snippet"])}
    assert marked == {"ristretto"}


@pytest.mark.slow
@pytest.mark.django_db
def test_the_search_page_shows_readable_snippets(client, django_user_model, espresso):
    client.force_login(django_user_model.objects.create_user("reader", password="pw"))
    page = client.get("/", {"q": "grinder calibration", "mode": "hybrid"}).content.decode()
    snippet = re.search(r'<p class="snippet">(.*?)</p>', page, re.DOTALL).group(1)
    assert_readable_snippet(snippet, "calibration")


@pytest.mark.slow
@pytest.mark.django_db
def test_ask_passages_show_readable_snippets(api, espresso, settings):
    settings.LLM_MODEL = ""  # the extractive provider
    question = "How much water goes into a ristretto shot?"
    response = api.post("/api/ask/", {"question": question}, content_type="application/json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["provider"] == "extractive" and body["found"]
    cited = body["citations"][0]
    assert cited["document_id"] == espresso["id"]
    assert_readable_snippet(cited["snippet"], "ristretto")
