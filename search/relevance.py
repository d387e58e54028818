"""Is a passage relevant to a query? Its content words and both retrievers' evidence.

Used by Ask (whether to answer or say "not found") and by search (hits marked low-confidence).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from django.conf import settings

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


def passage_relevant(
    *,
    similarity: float | None,
    coverage: float,
    floor: float,
    low_factor: float,
    coverage_with_similarity: float,
    coverage_alone: float,
) -> bool:
    """Whether a passage may be answered from: evidence of both retrievers, not one cosine.

    - similar enough on its own (cosine >= ``floor``);
    - or moderately similar (>= ``floor * low_factor``) and holding the query's words (the share
      of its content words the passage contains >= ``coverage_with_similarity``): a short
      document a question fits exactly can sit under the floor;
    - or, with no similarity at hand (the embedder is down), holding nearly all the query's words.

    A lone common word in common (a keyword match on "day") is not evidence: on a small corpus
    BM25 ranks such a match first, which is why rank is not used.
    """
    if similarity is not None:
        if similarity >= floor:
            return True
        return similarity >= floor * low_factor and coverage >= coverage_with_similarity
    return coverage >= coverage_alone


def relevance_settings() -> dict:
    return {
        "floor": float(settings.ASK_MIN_SIMILARITY),
        "low_factor": float(settings.ASK_LOW_SIMILARITY_FACTOR),
        "coverage_with_similarity": float(settings.ASK_COVERAGE_WITH_SIMILARITY),
        "coverage_alone": float(settings.ASK_COVERAGE_ALONE),
    }
