"""Hybrid search: the keyword and the semantic ranking fused into one.

Weighted reciprocal rank fusion (``SEARCH_RRF_K``, ``SEARCH_KEYWORD_WEIGHT``,
``SEARCH_SEMANTIC_WEIGHT``), optionally scaled by how strong each side's own score says a match
is (``SEARCH_FUSION=evidence``; bench/fusion_bench.py measured it).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from search.candidates import Candidate


def reciprocal_rank_fusion(
    keyword: list[Candidate],
    semantic: list[Candidate],
    *,
    k: int,
    keyword_weight: float,
    semantic_weight: float,
    evidence: FusionEvidence | None = None,
) -> list[Candidate]:
    """Both rankings fused by weighted reciprocal rank; takes over (and changes) the candidates passed in.

    With ``evidence``, each side's contribution is scaled by how strong its own score says the
    match is (``FusionEvidence.keyword`` of the BM25 share, ``.semantic`` of the cosine), so a rank
    that only means "best of a few weak matches" counts for little. Plain RRF lets a lone common
    word shared with a question ("day") outrank a passage that answers it in other words, which is
    what a small corpus shows first (every document is in both lists).
    """
    fused: dict[str, Candidate] = {}
    for rank, cand in enumerate(keyword, start=1):
        strength = evidence.keyword(cand.keyword_share) if evidence else 1.0
        cand.score, cand.keyword_rank = keyword_weight * strength / (k + rank), rank
        fused[cand.chunk_id] = cand
    for rank, cand in enumerate(semantic, start=1):
        strength = evidence.semantic(cand.similarity) if evidence else 1.0
        entry = fused.get(cand.chunk_id)
        if entry is None:
            cand.score, cand.semantic_rank = semantic_weight * strength / (k + rank), rank
            fused[cand.chunk_id] = cand
        else:
            entry.score += semantic_weight * strength / (k + rank)
            entry.semantic_rank = rank
            entry.similarity = cand.similarity
    return sorted(fused.values(), key=lambda c: (-c.score, c.chunk_id))


@dataclass(frozen=True, slots=True)
class FusionEvidence:
    """How much a rank is worth given its side's own score: a weight in [floor, 1].

    Keyword: the BM25 share (``KeywordHit.share``) over ``keyword_saturation`` (a share at or above
    it counts fully). Semantic: the cosine between ``semantic_low`` (nothing) and ``semantic_high``
    (fully). ``floor`` keeps a weak side from vanishing, so fusion still breaks ties with it.
    """

    keyword_saturation: float
    semantic_low: float
    semantic_high: float
    floor: float = 0.05

    def keyword(self, share: float | None) -> float:
        if share is None:
            return 1.0
        return max(self.floor, min(1.0, share / self.keyword_saturation))

    def semantic(self, similarity: float | None) -> float:
        if similarity is None:
            return 1.0
        span = max(self.semantic_high - self.semantic_low, 1e-6)
        return max(self.floor, min(1.0, (similarity - self.semantic_low) / span))

    @classmethod
    def from_settings(cls) -> FusionEvidence | None:
        if settings.SEARCH_FUSION != "evidence":
            return None
        return cls(
            keyword_saturation=settings.SEARCH_FUSION_KEYWORD_SATURATION,
            semantic_low=settings.SEARCH_FUSION_SEMANTIC_LOW,
            semantic_high=settings.SEARCH_FUSION_SEMANTIC_HIGH,
        )
