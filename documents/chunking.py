"""Split a parsed document into token-bounded, heading-aware, overlapping chunks.

Rules, in order of precedence:

* **Token limit.** No chunk has more than `chunk_tokens` tokens of `tokenizer` (counted without
  special tokens). all-MiniLM-L6-v2 truncates at 256 tokens *including* [CLS] and [SEP], so
  with that model `chunk_tokens` must be at most 254 or the tail of a full chunk is never
  embedded, and less still when the embedded string is more than the chunk text (e.g. a
  "title > headings" context line in front of it).
* **Character limit.** No chunk has more than `max_chars` characters (default
  `MAX_CHARS_PER_TOKEN` per token of `chunk_tokens`, at least `MIN_MAX_CHARS`), whatever the
  tokenizer says: a word the tokenizer cannot split is one [UNK] token however long it is (two
  million `a`s were 34 tokens), and runs of whitespace are no tokens at all (a 3,000-level nested
  list was a 700 KB chunk). Such text is cut between tokens where it can be, and inside an
  oversized token where it cannot. Headings in `heading_path` are cut to `MAX_HEADING_CHARS`
  characters and `MAX_HEADING_DEPTH` levels (see `heading_path_bounded`), so the context line in
  front of a chunk is bounded too.
* **Sections.** A chunk never mixes the end of one section with the start of another. Two
  exceptions, both whole-section:
  - small neighbouring sections merge into one chunk when together they fit the limit and all
    are either the same heading or direct children of one parent (siblings, or a parent's intro
    plus its first children); the chunk's heading_path is that common parent. This avoids
    one-line chunks for short sections ("## License").
  - PDF pages of the same heading path form one flow: page breaks are layout, not structure,
    and a paragraph often runs across them. Chunks may span pages (metadata `pages`), and a
    page break is preferred as a split point like a paragraph break.
* **Split points.** A section longer than the limit is cut at the best boundary in the second
  half of the window: page or paragraph break, else sentence end, else line break, else word
  boundary, else (a single "word" longer than half a chunk) between tokens.
* **Overlap.** Consecutive chunks of one section share about `overlap_tokens` tokens (snapped
  forward to a word start, so slightly fewer).

Spans: `chunk.text == parsed.text[chunk.char_start:chunk.char_end]`, starting at a token and
ending at one (no surrounding whitespace). Deterministic: same input, same chunks and hashes.

Speed and memory: each unit of text is tokenized once, in `encode_batch` calls of at most
`_ENCODE_BATCH_CHARS` characters, and a unit's spans are found as soon as it is tokenized, so only
one batch of encodings (~50 bytes per token) is alive at a time, whatever the document's size
(encoding a 5 MB text at once held ~120 MB). Split points are found with regular expressions on
a window of text plus O(1) offset look-ups, so the work is linear in the text length.
"""

from __future__ import annotations

import bisect
import itertools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from documents.parsers import ParsedDocument, Section, content_hash

if TYPE_CHECKING:
    from tokenizers import Tokenizer

# Text longer than this is tokenized in pieces cut at paragraph (else line, else space)
# boundaries, which bounds memory on huge single-section inputs (~50 bytes per token in the
# tokenizer's encoding); a piece boundary is a forced split point without overlap.
_MAX_UNIT_CHARS = 60_000

# Texts handed to one encode_batch call: enough for the tokenizer's threads, bounded in memory.
_ENCODE_BATCH_CHARS = 1_000_000

# The character limit of a chunk, per token of its token limit. English prose averages 4-5
# characters per token with all-MiniLM-L6-v2's tokenizer (SciFact: at most 6.1 over a whole
# 240-token chunk), so the limit only bites on text the tokenizer cannot see.
MAX_CHARS_PER_TOKEN = 8
MIN_MAX_CHARS = 256
MAX_HEADING_CHARS = 200
MAX_HEADING_DEPTH = 8

_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n\s*")
_SENTENCE_BREAK = re.compile(r"[.!?\u2026\u3002\uff01\uff1f][\"'\u2019\u201d)\]]*\s+")
_LINE_BREAK = re.compile(r"\n\s*")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class ChunkDraft:
    ordinal: int
    text: str
    token_count: int
    char_start: int
    char_end: int
    heading_path: list[str]
    metadata: dict
    content_hash: str


@dataclass(slots=True)
class _Unit:
    """A span of parsed.text chunked as a whole: one section, a PDF page flow, or (after
    merging) several small sections."""

    start: int
    end: int
    sections: list[Section]
    heading_path: list[str]
    flow: bool = False
    token_count: int = 0
    section_starts: list[int] | None = None
    # (char_start, char_end, tokens) of the unit's chunks, found while its encoding was alive.
    spans: list[tuple[int, int, int]] | None = None


def chunk_document(
    parsed: ParsedDocument,
    *,
    tokenizer: Tokenizer,
    chunk_tokens: int,
    overlap_tokens: int,
    max_chars: int | None = None,
) -> list[ChunkDraft]:
    """Chunk `parsed` with a HuggingFace `tokenizers.Tokenizer` (used read-only)."""
    if chunk_tokens < 1:
        raise ValueError("chunk_tokens must be at least 1")
    if not 0 <= overlap_tokens < chunk_tokens:
        raise ValueError("overlap_tokens must be at least 0 and smaller than chunk_tokens")
    if max_chars is None:
        max_chars = max(MIN_MAX_CHARS, chunk_tokens * MAX_CHARS_PER_TOKEN)
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    tokenizer = _without_truncation(tokenizer)
    text = parsed.text

    units = _split_long_units(text, _flow_units(text, parsed.sections))
    for group in _encode_groups(units):
        encodings = tokenizer.encode_batch([text[u.start : u.end] for u in group], add_special_tokens=False)
        for unit, encoding in zip(group, encodings, strict=True):
            unit.token_count = len(encoding.ids)
            if unit.token_count:
                unit.spans = list(_unit_spans(text, unit, encoding, tokenizer, chunk_tokens, overlap_tokens, max_chars))
        del encodings
    units = _merge_small_units(text, [u for u in units if u.token_count], tokenizer, chunk_tokens, max_chars)

    chunks = []
    for unit in units:
        heading_path = heading_path_bounded(unit.heading_path)
        for start, end, tokens in unit.spans:
            chunk_text = text[start:end]
            chunks.append(
                ChunkDraft(
                    ordinal=len(chunks),
                    text=chunk_text,
                    token_count=tokens,
                    char_start=start,
                    char_end=end,
                    heading_path=list(heading_path),
                    metadata=_page_metadata(unit, start, end),
                    content_hash=content_hash(chunk_text),
                )
            )
    return chunks


def heading_path_bounded(path: list[str]) -> list[str]:
    """The heading path as chunks carry it: at most MAX_HEADING_DEPTH levels (the outermost, so
    it is still a path of the document's heading tree) of at most MAX_HEADING_CHARS characters.

    It is repeated in every chunk's context line, embedding input and search vector; a heading
    is a title, not a paragraph, and a longer one is cut at a word boundary.
    """
    out = []
    for heading in path[:MAX_HEADING_DEPTH]:
        if len(heading) > MAX_HEADING_CHARS:
            cut = heading[: MAX_HEADING_CHARS - 1]
            space = cut.rfind(" ", MAX_HEADING_CHARS // 2)
            heading = (cut[:space] if space > 0 else cut).rstrip() + "\u2026"
        out.append(heading)
    return out


def _encode_groups(units: list[_Unit]):
    group: list[_Unit] = []
    size = 0
    for unit in units:
        if group and size + (unit.end - unit.start) > _ENCODE_BATCH_CHARS:
            yield group
            group, size = [], 0
        group.append(unit)
        size += unit.end - unit.start
    if group:
        yield group


# --- Tokenizer ----------------------------------------------------------------------------------

_UNTRUNCATED: dict[int, tuple[Tokenizer, Tokenizer]] = {}


def _without_truncation(tokenizer: Tokenizer) -> Tokenizer:
    """The embedder's tokenizer truncates and pads to the model length; chunking needs every
    token. Work on a cached copy rather than reconfigure a tokenizer that others share."""
    if tokenizer.truncation is None and tokenizer.padding is None:
        return tokenizer
    cached = _UNTRUNCATED.get(id(tokenizer))
    if cached is not None and cached[0] is tokenizer:
        return cached[1]
    from tokenizers import Tokenizer as TokenizerClass

    copy = TokenizerClass.from_str(tokenizer.to_str())
    copy.no_truncation()
    copy.no_padding()
    if len(_UNTRUNCATED) > 8:
        _UNTRUNCATED.clear()
    # Holding the original keeps its id from being reused by another object.
    _UNTRUNCATED[id(tokenizer)] = (tokenizer, copy)
    return copy


# --- Units --------------------------------------------------------------------------------------


def _gap_is_blank(text: str, start: int, end: int) -> bool:
    return start <= end and not text[start:end].strip()


def _flow_units(text: str, sections: list[Section]) -> list[_Unit]:
    units: list[_Unit] = []
    for section in sections:
        last = units[-1] if units else None
        if (
            last is not None
            and section.page is not None
            and last.sections[-1].page is not None
            and section.heading_path == last.heading_path
            and _gap_is_blank(text, last.end, section.char_start)
        ):
            last.sections.append(section)
            last.end = section.char_end
            last.flow = True
        else:
            units.append(_Unit(section.char_start, section.char_end, [section], list(section.heading_path)))
    return units


def _split_long_units(text: str, units: list[_Unit]) -> list[_Unit]:
    out: list[_Unit] = []
    for unit in units:
        start = unit.start
        while unit.end - start > _MAX_UNIT_CHARS:
            limit = start + _MAX_UNIT_CHARS
            window = text[start + _MAX_UNIT_CHARS // 2 : limit]
            cut = -1
            for pattern in (_PARAGRAPH_BREAK, _LINE_BREAK, _SPACE):
                matches = list(pattern.finditer(window))
                if matches:
                    cut = start + _MAX_UNIT_CHARS // 2 + matches[-1].start()
                    break
            if cut <= start:
                cut = limit
            out.append(_Unit(start, cut, unit.sections, unit.heading_path, unit.flow))
            start = cut
            while start < unit.end and text[start].isspace():
                start += 1
        if start < unit.end:
            out.append(_Unit(start, unit.end, unit.sections, unit.heading_path, unit.flow))
    return out


def _common_prefix(a: list[str], b: list[str]) -> list[str]:
    size = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        size += 1
    return a[:size]


def _token_counts(tokenizer, texts: list[str]) -> list[int]:
    """Tokens of each text, encoded in bounded batches (see _ENCODE_BATCH_CHARS)."""
    counts: list[int] = []
    start = 0
    while start < len(texts):
        stop, size = start, 0
        while stop < len(texts) and (stop == start or size + len(texts[stop]) <= _ENCODE_BATCH_CHARS):
            size += len(texts[stop])
            stop += 1
        counts.extend(len(e.ids) for e in tokenizer.encode_batch(texts[start:stop], add_special_tokens=False))
        start = stop
    return counts


def _merge_small_units(text: str, units: list[_Unit], tokenizer, chunk_tokens: int, max_chars: int) -> list[_Unit]:
    """Merge whole small sections, following the heading tree (see the module docstring).

    A heading subtree that fits the limit becomes one unit; otherwise its intro and its child
    subtrees are considered in turn, and neighbours that each fit are packed greedily. Text
    between units (the line of a heading that has no text of its own) is counted too.
    """
    if len(units) < 2:
        return units
    gap_texts = [text[a.end : b.start] for a, b in itertools.pairwise(units)]
    nonblank = [i for i, gap in enumerate(gap_texts) if gap.strip()]
    gap_tokens = [0] * len(gap_texts)
    for i, count in zip(nonblank, _token_counts(tokenizer, [gap_texts[i] for i in nonblank]), strict=True):
        gap_tokens[i] = count
    del gap_texts
    # prefix[k] = tokens of units[:k] plus the gaps between them; total(lo, hi) is then O(1).
    prefix = [0]
    for k, unit in enumerate(units):
        prefix.append(prefix[-1] + unit.token_count + (gap_tokens[k - 1] if k else 0))

    def total(lo: int, hi: int) -> int:
        return prefix[hi] - prefix[lo] - (gap_tokens[lo - 1] if lo else 0)

    # Slides (and TIFF pages) are sections with a page of their own that do not flow into each
    # other: merging two would leave the second's words under the first's number in every hit.
    firsts = [unit.sections[0].page for unit in units]

    def fits(lo: int, hi: int) -> bool:
        # A unit that was split fails both tests on its own, so whatever fits is whole units.
        chars = units[hi - 1].spans[-1][1] - units[lo].spans[0][0]
        if total(lo, hi) > chunk_tokens or chars > max_chars:
            return False
        return len({firsts[k] for k in range(lo, hi)} - {None}) <= 1 or any(units[k].flow for k in range(lo, hi))

    def group(lo: int, hi: int, depth: int) -> list[tuple[int, int]]:
        if fits(lo, hi):
            return [(lo, hi)]
        blocks = []  # this node's own units one by one, then each child subtree whole
        k = lo
        while k < hi:
            path = units[k].heading_path
            stop = k + 1
            if len(path) > depth:
                while (
                    stop < hi
                    and len(units[stop].heading_path) > depth
                    and units[stop].heading_path[depth] == path[depth]
                ):
                    stop += 1
            blocks.append((k, stop))
            k = stop
        out: list[tuple[int, int]] = []
        pack: tuple[int, int] | None = None
        for a, b in blocks:
            if fits(a, b):
                if pack is not None and fits(pack[0], b):
                    pack = (pack[0], b)
                    continue
                if pack is not None:
                    out.append(pack)
                pack = (a, b)
                continue
            if pack is not None:
                out.append(pack)
                pack = None
            out.extend([(a, b)] if b - a == 1 else group(a, b, depth + 1))
        if pack is not None:
            out.append(pack)
        return out

    merged = []
    for lo, hi in group(0, len(units), 0):
        if hi - lo == 1:
            merged.append(units[lo])
            continue
        path = units[lo].heading_path
        for unit in units[lo + 1 : hi]:
            path = _common_prefix(path, unit.heading_path)
        sections = [s for unit in units[lo:hi] for s in unit.sections]
        span = (units[lo].spans[0][0], units[hi - 1].spans[-1][1], total(lo, hi))
        merged.append(
            _Unit(units[lo].start, units[hi - 1].end, sections, list(path), token_count=span[2], spans=[span])
        )
    return merged


# --- Splitting ----------------------------------------------------------------------------------


def _word_start(encoding, index: int) -> bool:
    return encoding.token_to_word(index) != encoding.token_to_word(index - 1)


def _unit_spans(text: str, unit: _Unit, encoding, tokenizer, chunk_tokens: int, overlap_tokens: int, max_chars: int):
    """(char_start, char_end, tokens) of the chunks of one unit, in order."""
    offsets = encoding.offsets
    first_char, last_char = offsets[0][0], offsets[-1][1]
    if len(offsets) <= chunk_tokens and last_char - first_char <= max_chars:
        yield unit.start + first_char, unit.start + last_char, len(offsets)
        return
    yield from _split_unit(text, unit, encoding, offsets, tokenizer, chunk_tokens, overlap_tokens, max_chars)


def _split_unit(
    text: str, unit: _Unit, encoding, offsets, tokenizer, chunk_tokens: int, overlap_tokens: int, max_chars: int
):
    total = len(offsets)
    ends = [end for _, end in offsets]
    min_tokens = max(1, chunk_tokens // 2)
    page_starts = [s.char_start - unit.start for s in unit.sections if s.char_start > unit.start] if unit.flow else []
    local = text[unit.start : unit.end]

    first = 0
    while first < total:
        # Tokens [first, by_chars) end within max_chars of the chunk's first character.
        by_chars = bisect.bisect_right(ends, offsets[first][0] + max_chars, first)
        if by_chars == first:
            # One token longer than a whole chunk (a word the tokenizer reads as one [UNK]).
            yield from _cut_token(
                text, unit.start + offsets[first][0], unit.start + ends[first], tokenizer, chunk_tokens, max_chars
            )
            first += 1
            continue
        if total - first <= chunk_tokens and by_chars == total:
            yield unit.start + offsets[first][0], unit.start + ends[total - 1], total - first
            return
        # high < total: either by_chars < total, or more than chunk_tokens tokens are left.
        high = min(first + chunk_tokens, by_chars)
        low = min(first + min_tokens, high)  # cut before token `stop`, low <= stop <= high
        stop = _best_cut(local, encoding, low, high, page_starts)
        start_char, end_char = unit.start + offsets[first][0], unit.start + ends[stop - 1]
        tokens = stop - first
        if (first and not _word_start(encoding, first)) or not _word_start(encoding, stop):
            # A cut inside a word: the piece re-encoded on its own tokenizes differently.
            tokens = _token_len(tokenizer, text[start_char:end_char])
            while tokens > chunk_tokens and stop > first + 1:
                stop -= 1
                end_char = unit.start + ends[stop - 1]
                tokens = _token_len(tokenizer, text[start_char:end_char])
        yield start_char, end_char, tokens
        # When characters, not tokens, ended the chunk, an overlap of overlap_tokens could be most
        # of it, and the next chunk would move on by a token or two: keep it to half the chunk.
        overlap = overlap_tokens if high == first + chunk_tokens else min(overlap_tokens, (stop - first) // 2)
        first = _overlap_start(encoding, first, stop, overlap)


def _cut_token(text: str, start: int, end: int, tokenizer, chunk_tokens: int, max_chars: int):
    """Chunks of at most max_chars characters out of one oversized token."""
    while start < end:
        stop = min(end, start + max_chars)
        tokens = _token_len(tokenizer, text[start:stop])
        while tokens > chunk_tokens:
            # A short tail of a long word is word pieces again, possibly too many of them.
            stop = start + max(1, (stop - start) // 2)
            tokens = _token_len(tokenizer, text[start:stop])
        yield start, stop, tokens
        start = stop


def _token_len(tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False).ids)


def _after_space(encoding, index: int) -> bool:
    return encoding.token_to_chars(index)[0] > encoding.token_to_chars(index - 1)[1]


def _overlap_start(encoding, first: int, stop: int, overlap_tokens: int) -> int:
    """First token of the next chunk: about `overlap_tokens` back from `stop`, moved forward to
    the start of a whitespace-separated word (else of any word) so no chunk opens mid-word."""
    start = max(first + 1, stop - overlap_tokens)
    for accept in (_after_space, _word_start):
        for index in range(start, stop):
            if accept(encoding, index):
                return index
    return start


def _best_cut(local: str, encoding, low: int, high: int, page_starts: list[int]) -> int:
    """Token index to cut before, in [low, high]: the latest boundary of the best kind."""
    char_low = encoding.token_to_chars(low - 1)[1]
    char_high = encoding.token_to_chars(high)[0]

    index = bisect.bisect_right(page_starts, char_high) - 1
    if index >= 0 and page_starts[index] >= char_low:
        stop = encoding.char_to_token(page_starts[index])
        if stop is not None and low <= stop <= high:
            return stop

    window = local[char_low:char_high]
    for pattern in (_PARAGRAPH_BREAK, _SENTENCE_BREAK, _LINE_BREAK, _SPACE):
        for match in reversed(list(pattern.finditer(window))):
            stop = encoding.char_to_token(char_low + match.end())
            if stop is not None and low <= stop <= high:
                return stop

    for stop in range(high, low - 1, -1):
        if _word_start(encoding, stop):
            return stop
    return high


# --- Metadata -----------------------------------------------------------------------------------


def chunk_page(metadata: dict | None) -> int | None:
    """The page (PDF/TIFF page, slide) a chunk starts on, from its metadata; None without pages."""
    page = (metadata or {}).get("page")
    return page if isinstance(page, int) and not isinstance(page, bool) else None


def _page_metadata(unit: _Unit, start: int, end: int) -> dict:
    # Sections are in text order: bisect to the ones the chunk overlaps (a PDF may have 1000 pages).
    if unit.section_starts is None:
        unit.section_starts = [s.char_start for s in unit.sections]
    starts = unit.section_starts
    lo = max(0, bisect.bisect_right(starts, start) - 1)
    hi = bisect.bisect_left(starts, end)
    pages = sorted({s.page for s in unit.sections[lo:hi] if s.page is not None and s.char_end > start})
    if not pages:
        return {}
    metadata: dict = {"page": pages[0]}
    if len(pages) > 1:
        metadata["pages"] = pages
    return metadata
