"""Split a user's query into plain words, required "quoted phrases" and -exclusions.

The syntax is the familiar web-search one, made forgiving for natural-language questions:

- plain words are optional and only rank (a long question must not need every word to match);
- ``"quoted phrases"`` are required and matched as phrases (word order and adjacency);
- ``-word`` and ``-"a phrase"`` exclude chunks that contain them;
- an unmatched ``"`` is ignored, so ``a 5" screen`` searches for its words;
- a ``-`` inside a word (``covid-19``, ``non-small``) is part of the word, not an exclusion.

This module only splits text; turning the pieces into lexemes and tsqueries is done by
PostgreSQL itself (``to_tsvector`` / ``phraseto_tsquery`` with the pieces as parameters), so no
user text is ever parsed as tsquery syntax.
"""

from __future__ import annotations

from dataclasses import dataclass

# Typographic quotes are what phones and word processors type for ".
QUOTES = frozenset('"\u201c\u201d\u201e\u00ab\u00bb')


@dataclass(frozen=True)
class ParsedQuery:
    words: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()

    @property
    def ranking_text(self) -> str:
        """Everything that ranks: plain words and the words of the phrases."""
        return " ".join((*self.words, *self.phrases))

    @property
    def is_empty(self) -> bool:
        return not self.words and not self.phrases


def query_parse(text: str) -> ParsedQuery:
    words: list[str] = []
    phrases: list[str] = []
    excluded: list[str] = []
    # PostgreSQL text cannot hold NUL; treat it as the separator it most likely was meant to be.
    text = text.replace("\x00", " ")
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char.isspace():
            i += 1
            continue
        negated = char == "-" and i + 1 < n and not text[i + 1].isspace()
        start = i + 1 if negated else i
        if text[start] in QUOTES:
            close = _find_quote(text, start + 1)
            if close is None:
                # Unmatched quote: drop it and read the rest as ordinary words.
                i = start + 1
                continue
            phrase = " ".join(text[start + 1 : close].split())
            if phrase:
                (excluded if negated else phrases).append(phrase)
            i = close + 1
            continue
        end = start
        while end < n and not text[end].isspace() and text[end] not in QUOTES:
            end += 1
        # Never empty: the character at ``start`` is neither a space nor a quote.
        (excluded if negated else words).append(text[start:end])
        i = end
    return ParsedQuery(words=tuple(words), phrases=tuple(phrases), excluded=tuple(excluded))


def _find_quote(text: str, start: int) -> int | None:
    for index in range(start, len(text)):
        if text[index] in QUOTES:
            return index
    return None
