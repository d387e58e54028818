"""A question's content words, for matching it against sentences and passages without the index."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Words that carry no meaning for matching a question to a text.
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her here
    hers him his how i if in into is it its itself just me more most my no nor not now of off on once only or other
    our ours out over own same she should so some such than that the their theirs them then there these they this
    those through to too under until up very was we were what when where which while who whom why will with would
    you your yours tell explain describe please much many""".split()
)
_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)?")


def stem(word: str) -> str:
    # Crude, but enough to let "bees" meet "bee" and "steamed" meet "steam".
    for suffix in ("ing", "edly", "ed", "es", "s", "ly"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_terms(text: str) -> set[str]:
    return {stem(w) for w in (m.casefold() for m in _WORD.findall(text)) if w not in STOPWORDS and len(w) > 1}


def coverage(query_terms: Iterable[str], text: str) -> float:
    """The share of the query's content terms that ``text`` contains (0 when the query has none)."""
    wanted = set(query_terms)
    if not wanted:
        return 0.0
    return len(wanted & content_terms(text)) / len(wanted)
