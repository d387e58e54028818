"""Reads: keyword, semantic and hybrid retrieval over chunks.

``chunk_search`` is the one entry point that the REST API, the web page, the answer endpoint
and the evaluation command all use, so what is measured is what users get.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection

from documents.models import Chunk, Document, Source
from search.filters import SearchFilters
from search.keyword import keyword_search, snippet_html, snippet_sql

logger = logging.getLogger(__name__)

MODES = ("keyword", "semantic", "hybrid")


class SearchUnavailable(Exception):
    """The semantic side (embedder or vector store) cannot answer."""


@dataclass
class SearchResult:
    chunk_id: str
    document_id: int
    title: str
    url: str
    source: str
    snippet: str
    score: float
    rank: int
    text: str = ""
    heading_path: list = field(default_factory=list)
    metadata: dict = field(default_factory=dict)
    keyword_rank: int | None = None
    semantic_rank: int | None = None
    rerank_score: float | None = None
    similarity: float | None = None  # cosine to the query, when the semantic side saw this chunk
    low_confidence: bool = False  # weak evidence on both sides (search.relevance)


@dataclass
class SearchResponse:
    query: str
    mode: str
    count: int
    results: list[SearchResult]
    took_ms: float
    warnings: list[str] = field(default_factory=list)
    reranked: bool | None = None  # None: no rerank asked for
    rerank_error: str = ""


@dataclass(slots=True)
class _Candidate:
    chunk_id: str
    document_id: int
    score: float = 0.0
    keyword_rank: int | None = None
    semantic_rank: int | None = None
    keyword_share: float | None = None  # KeywordHit.share
    similarity: float | None = None  # cosine similarity to the query (semantic side)


def semantic_candidates(query: str, *, limit: int, filters: SearchFilters) -> list[_Candidate]:
    from documents.embeddings import EmbeddingError, get_embedder
    from documents.vectorstore import VectorStoreError, get_vector_store

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
        raise SearchUnavailable(f"semantic search is unavailable: {side} failed (the server log has the cause)") from exc
    return [
        _Candidate(
            chunk_id=str(hit.id),
            document_id=int(hit.payload.get("document_id", 0)),
            score=float(hit.score),
            similarity=float(hit.score),
        )
        for hit in hits
    ]


def keyword_candidates(query: str, *, limit: int, filters: SearchFilters) -> list[_Candidate]:
    return [
        _Candidate(hit.chunk_id, hit.document_id, hit.score, keyword_share=hit.share)
        for hit in keyword_search(query, limit=limit, filters=filters)
    ]


def reciprocal_rank_fusion(
    keyword: list[_Candidate],
    semantic: list[_Candidate],
    *,
    k: int,
    keyword_weight: float,
    semantic_weight: float,
    evidence: FusionEvidence | None = None,
) -> list[_Candidate]:
    """Both rankings fused by weighted reciprocal rank; takes over (and changes) the candidates passed in.

    With ``evidence``, each side's contribution is scaled by how strong its own score says the
    match is (``FusionEvidence.keyword`` of the BM25 share, ``.semantic`` of the cosine), so a rank
    that only means "best of a few weak matches" counts for little. Plain RRF lets a lone common
    word shared with a question ("day") outrank a passage that answers it in other words, which is
    what a small corpus shows first (every document is in both lists).
    """
    fused: dict[str, _Candidate] = {}
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


def _group(candidates: list[_Candidate], max_per_document: int) -> list[_Candidate]:
    if max_per_document <= 0:
        return candidates
    seen: dict[int, int] = {}
    grouped = []
    for cand in candidates:
        n = seen.get(cand.document_id, 0)
        if n < max_per_document:
            grouped.append(cand)
            seen[cand.document_id] = n + 1
    return grouped


def chunk_search(
    query: str,
    *,
    mode: str | None = None,
    limit: int = 10,
    offset: int = 0,
    filters: SearchFilters | None = None,
    max_per_document: int | None = None,
    candidates: int | None = None,
    with_snippets: bool = True,
    rerank: bool = False,
) -> SearchResponse:
    """Search chunks. Raises SearchUnavailable only in semantic mode; hybrid degrades.

    ``rerank``: the best ``RERANK_TOP_N`` results are reordered by the rerank endpoint
    (``search.rerank``); if it fails they keep their order and the response says why.
    """
    started = time.perf_counter()
    mode = mode or settings.SEARCH_DEFAULT_MODE
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    filters = filters or SearchFilters()
    depth = max(candidates or settings.SEARCH_CANDIDATES, offset + limit)
    per_doc = settings.SEARCH_MAX_PER_DOCUMENT if max_per_document is None else max_per_document
    if per_doc:
        # Grouping drops chunks of documents already shown: fetch deeper so a page stays full.
        depth = min(depth * 2, 2000)
    warnings: list[str] = []

    if mode == "keyword":
        ranked = keyword_candidates(query, limit=depth, filters=filters)
        for i, cand in enumerate(ranked, start=1):
            cand.keyword_rank = i
    elif mode == "semantic":
        ranked = semantic_candidates(query, limit=depth, filters=filters)
        for i, cand in enumerate(ranked, start=1):
            cand.semantic_rank = i
    else:
        # The semantic side (query embedding + vector search: no database) runs in another thread
        # while this one waits on PostgreSQL for the keyword side; both release the GIL for most
        # of their time, so hybrid costs about the slower of the two instead of their sum
        # (bench/results/search_scale.md).
        pending = _semantic_executor().submit(semantic_candidates, query, limit=depth, filters=filters)
        try:
            keyword = keyword_candidates(query, limit=depth, filters=filters)
        except BaseException:
            pending.cancel()
            raise
        try:
            semantic = pending.result()
        except SearchUnavailable as exc:
            logger.warning("hybrid search fell back to keyword results: %s", exc)
            warnings.append(f"{exc}; showing keyword results only")
            semantic = []
        ranked = reciprocal_rank_fusion(
            keyword,
            semantic,
            k=settings.SEARCH_RRF_K,
            keyword_weight=settings.SEARCH_KEYWORD_WEIGHT,
            semantic_weight=settings.SEARCH_SEMANTIC_WEIGHT,
            evidence=FusionEvidence.from_settings(),
        )

    grouped = _group(ranked, per_doc)
    reranked, rerank_error = None, ""
    if rerank:
        results, gone, outcome = _reranked_page(grouped, query, offset=offset, limit=limit, with_snippets=with_snippets)
        reranked, rerank_error = outcome.reranked, outcome.error
        if not outcome.reranked:
            warnings.append(f"not reranked: {outcome.error}")
    else:
        results, gone = _page(grouped, query, offset=offset, limit=limit, with_snippets=with_snippets)
    count = len(grouped) - gone
    _mark_low_confidence(query, results)
    if mode != "semantic" and not results:
        warnings.extend(_why_nothing(query))
    return SearchResponse(
        query=query,
        mode=mode,
        count=count,
        results=results,
        took_ms=round((time.perf_counter() - started) * 1000, 2),
        warnings=warnings,
        reranked=reranked,
        rerank_error=rerank_error,
    )


def _why_nothing(query: str) -> list[str]:
    """Say why a keyword search found nothing when the reason is the query itself."""
    from search.relevance import content_terms

    if content_terms(query):
        return []
    return [
        "The query has only very common words, which keyword search ignores: add a word that says what "
        "you are looking for, or try semantic mode."
    ]


def _mark_low_confidence(query: str, results: list[SearchResult]) -> None:
    """Flag hits the evidence barely supports, by the rule Ask answers with (no extra embedding:
    the cosine is the vector search's own, known for chunks the semantic side returned)."""
    from search.relevance import content_terms, coverage, passage_relevant, relevance_settings

    terms = content_terms(query)
    rule = relevance_settings()
    for result in results:
        result.low_confidence = not passage_relevant(
            similarity=result.similarity, coverage=coverage(terms, result.text), **rule
        )


def _reranked_page(grouped: list[_Candidate], query: str, *, offset: int, limit: int, with_snippets: bool):
    """The page ``offset:offset+limit`` after the first ``RERANK_TOP_N`` results were reranked.

    Results past the reranked head keep their fused order behind it.
    """
    from search.rerank import rerank

    head, gone = _page(grouped, query, offset=0, limit=settings.RERANK_TOP_N, with_snippets=with_snippets)
    consumed = len(head) + gone
    outcome = rerank(query, [_rerank_text(r) for r in head])
    ordered = [head[i] for i in outcome.order]
    for index, result in enumerate(head):
        result.rerank_score = round(outcome.scores[index], 6) if index in outcome.scores else None
    page = ordered[offset : offset + limit]
    if len(page) < limit and consumed < len(grouped):
        tail, tail_gone = _page(
            grouped[consumed:],
            query,
            offset=max(0, offset - len(ordered)),
            limit=limit - len(page),
            with_snippets=with_snippets,
        )
        page += tail
        gone += tail_gone
    for position, result in enumerate(page, start=offset + 1):
        result.rank = position
    return page, gone, outcome


def _rerank_text(result: SearchResult) -> str:
    # What a reader of the hit sees first: its title and section, then the passage.
    header = " > ".join(part for part in [result.title, *(result.heading_path or [])] if part)
    return f"{header}\n{result.text}" if header else result.text


_executor: ThreadPoolExecutor | None = None
_executor_pid = 0
_executor_lock = threading.Lock()


def _semantic_executor() -> ThreadPoolExecutor:
    """A process-wide pool for the semantic half of hybrid searches (re-created after a fork)."""
    global _executor, _executor_pid
    with _executor_lock:
        if _executor is None or _executor_pid != os.getpid():
            workers = settings.SEARCH_SEMANTIC_THREADS
            _executor = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="search-semantic")
            _executor_pid = os.getpid()
        return _executor


def _page(
    grouped: list[_Candidate], query: str, *, offset: int, limit: int, with_snippets: bool
) -> tuple[list[SearchResult], int]:
    """The results ``offset:offset+limit`` of ``grouped``, hydrated; and how many candidates were gone.

    One statement reads the page's rows, their document and source, and the snippets (hydration
    used to take three round trips: ORM query, query lexemes, ts_headline). A candidate whose
    chunk is gone (deleted since the vector store or the keyword query answered) takes no place:
    the next candidates fill the page, with another statement only in that rare case.
    """
    results: list[SearchResult] = []
    gone = 0
    position = offset
    snippet, params = snippet_sql(query) if with_snippets else ("NULL", {})
    while len(results) < limit and position < len(grouped):
        wanted = grouped[position : position + limit - len(results)]
        position += len(wanted)
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                SELECT c.id::text, c.text, c.heading_path, c.metadata, d.id, d.title, d.url, s.name, {snippet}
                FROM {Chunk._meta.db_table} c
                JOIN {Document._meta.db_table} d ON d.id = c.document_id
                JOIN {Source._meta.db_table} s ON s.id = d.source_id
                WHERE c.id = ANY(%(ids)s::uuid[])
                """,
                {**params, "ids": [c.chunk_id for c in wanted]},
            )
            rows = {row[0]: row for row in cursor.fetchall()}
        for cand in wanted:
            row = rows.get(cand.chunk_id)
            if row is None:
                gone += 1
                continue
            _, text, heading_path, metadata, document_id, title, url, source, snippet_text = row
            results.append(
                SearchResult(
                    chunk_id=cand.chunk_id,
                    document_id=document_id,
                    title=title,
                    url=url,
                    source=source,
                    snippet=snippet_html(snippet_text) if snippet_text else _plain_snippet(text),
                    score=round(cand.score, 6),
                    rank=offset + len(results) + 1,
                    text=text,
                    heading_path=_json(heading_path),
                    metadata=_json(metadata),
                    keyword_rank=cand.keyword_rank,
                    semantic_rank=cand.semantic_rank,
                    similarity=cand.similarity,
                )
            )
    return results, gone


def _json(value):
    # Django has psycopg hand jsonb over as text (its JSONField decodes it); raw SQL decodes here.
    return json.loads(value) if isinstance(value, str | bytes) else value


def _plain_snippet(text: str, length: int = 240) -> str:
    from django.utils.html import escape

    text = " ".join(text.split())
    return escape(text if len(text) <= length else text[:length].rsplit(" ", 1)[0] + " …")
