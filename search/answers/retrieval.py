"""Retrieval for answers: search, keep what is relevant, number it as passages.

See the package docstring for how relevance is decided.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
from django.conf import settings

from search.answers.passages import AnswerContext, answer_context_build
from search.filters import SearchFilters
from search.relevance import content_terms, coverage, passage_relevant, relevance_settings
from search.selectors import chunk_search

logger = logging.getLogger(__name__)


def chunk_similarities(*, question: str, chunk_ids: Sequence[str]) -> dict[str, float]:
    """Cosine similarity of the question to each chunk, with the vectors the vector store holds.

    The chunk vectors come from the embedding cache (``embed_chunks`` embeds only what is
    missing, e.g. a chunk that is still pending), so this costs one query embedding.
    """
    from documents.embeddings import get_embedder
    from documents.models import Chunk
    from documents.sync import embed_chunks

    if not chunk_ids:
        return {}
    chunks = list(Chunk.objects.filter(pk__in=list(chunk_ids)).only("id", "text", "context", "content_hash"))
    if not chunks:
        return {}
    vectors = embed_chunks(chunks)
    query = np.asarray(get_embedder().embed_query(question), dtype=np.float32)
    scores = vectors @ query
    return {str(chunk.pk): float(score) for chunk, score in zip(chunks, scores, strict=True)}


def answer_retrieve(
    *,
    question: str,
    mode: str | None = None,
    limit: int | None = None,
    filters: SearchFilters | None = None,
    rerank: bool = False,
    searched_for: str | None = None,
) -> AnswerContext:
    """Search, keep the relevant results, and number them as passages within the token budget.

    ``searched_for``: the standalone query to search and judge relevance with, when it differs
    from the question as asked (a follow-up rewritten with the conversation's earlier turns).

    Raises ``search.selectors.SearchUnavailable`` in semantic mode when vectors cannot be searched.
    """
    from documents.embeddings import EmbeddingError

    started = time.perf_counter()
    limit = limit or settings.ASK_DEFAULT_LIMIT
    query = searched_for or question
    response = chunk_search(
        query,
        mode=mode,
        limit=limit,
        filters=filters,
        max_per_document=settings.ASK_MAX_PER_DOCUMENT,
        rerank=rerank,
    )
    warnings = list(response.warnings)
    results = list(response.results)
    similarities: dict[str, float] | None = {}
    if results:
        try:
            similarities = chunk_similarities(question=query, chunk_ids=[r.chunk_id for r in results])
        except (EmbeddingError, OSError) as exc:
            logger.warning("answer relevance check fell back to the query's words: %s", exc)
            warnings.append(
                "The similarity check is unavailable; answering from passages holding the question's words."
            )
            similarities = None
        terms = content_terms(query)
        rule = relevance_settings()
        results = [
            r
            for r in results
            if passage_relevant(
                similarity=None if similarities is None else similarities.get(r.chunk_id, -1.0),
                coverage=coverage(terms, r.text),
                **rule,
            )
        ]
    passages = answer_context_build(
        results=results,
        budget_tokens=int(settings.ASK_CONTEXT_TOKENS),
        similarities=similarities or {},
    )
    return AnswerContext(
        question=question,
        mode=response.mode,
        passages=passages,
        took_ms=round((time.perf_counter() - started) * 1000, 2),
        warnings=warnings,
        retrieved=len(response.results),
        reranked=response.reranked,
        rerank_error=response.rerank_error,
        searched_for=query,
        closest=[] if passages else _closest(response.results),
    )


def _closest(results, count: int = 3) -> list[dict]:
    """The best-ranked distinct documents of the search, offered when none of them answers."""
    closest: list[dict] = []
    for result in results:
        if all(c["document_id"] != result.document_id for c in closest):
            closest.append({"document_id": result.document_id, "title": result.title, "url": result.url})
        if len(closest) == count:
            break
    return closest
