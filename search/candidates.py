"""The two sides of a search: candidate chunks by keyword (BM25) and by meaning (vectors).

Each side returns its candidates best first; ``search.fusion`` merges them for hybrid search and
``search.selectors.chunk_search`` turns them into results.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from search.filters import SearchFilters
from search.keyword import keyword_search

logger = logging.getLogger(__name__)


class SearchUnavailable(Exception):
    """The semantic side (embedder or vector store) cannot answer."""


@dataclass(slots=True)
class Candidate:
    chunk_id: str
    document_id: int
    score: float = 0.0
    keyword_rank: int | None = None
    semantic_rank: int | None = None
    keyword_share: float | None = None  # KeywordHit.share
    similarity: float | None = None  # cosine similarity to the query (semantic side)


def semantic_candidates(query: str, *, limit: int, filters: SearchFilters) -> list[Candidate]:
    from vectors.embedders import EmbeddingError, get_embedder
    from vectors.stores import VectorStoreError, get_vector_store

    try:
        embedder = get_embedder()
        vector = embedder.embed_query(query)
        store = get_vector_store()
        hits = store.search(
            vector,
            limit=limit,
            source_ids=filters.source_ids,
            document_ids=filters.document_ids,
            metadata=filters.metadata,
            # All that grouping needs; hydration reads the rest of the page from PostgreSQL. Reading
            # it here costs ~1 ms at depth 200 (vs ~1.2 ms to look the 200 chunks up in SQL), and in
            # hybrid mode this thread finishes long before the keyword SQL does.
            payload_fields=["document_id"],
        )
    except (EmbeddingError, VectorStoreError, OSError) as exc:
        # The cause's text can hold server paths and engine internals: it goes to the log, and
        # what users see (API error bodies, hybrid's warning, the search page) names the side.
        logger.warning("semantic search failed: %s: %s", type(exc).__name__, exc)
        side = "the embedder" if isinstance(exc, EmbeddingError) else "the vector store"
        raise SearchUnavailable(
            f"semantic search is unavailable: {side} failed (the server log has the cause)"
        ) from exc
    return [
        Candidate(
            chunk_id=str(hit.id),
            document_id=int(hit.payload.get("document_id", 0)),
            score=float(hit.score),
            similarity=float(hit.score),
        )
        for hit in hits
    ]


def keyword_candidates(query: str, *, limit: int, filters: SearchFilters) -> list[Candidate]:
    return [
        Candidate(hit.chunk_id, hit.document_id, hit.score, keyword_share=hit.share)
        for hit in keyword_search(query, limit=limit, filters=filters)
    ]
