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


@dataclass
class SearchResponse:
    query: str
    mode: str
    count: int
    results: list[SearchResult]
    took_ms: float
    warnings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Candidate:
    chunk_id: str
    document_id: int
    score: float = 0.0
    keyword_rank: int | None = None
    semantic_rank: int | None = None


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
        _Candidate(chunk_id=str(hit.id), document_id=int(hit.payload.get("document_id", 0)), score=float(hit.score))
        for hit in hits
    ]


def keyword_candidates(query: str, *, limit: int, filters: SearchFilters) -> list[_Candidate]:
    return [
        _Candidate(hit.chunk_id, hit.document_id, hit.score) for hit in keyword_search(query, limit=limit, filters=filters)
    ]


def reciprocal_rank_fusion(
    keyword: list[_Candidate], semantic: list[_Candidate], *, k: int, keyword_weight: float, semantic_weight: float
) -> list[_Candidate]:
    """Both rankings fused by weighted reciprocal rank; takes over (and changes) the candidates passed in."""
    fused: dict[str, _Candidate] = {}
    for rank, cand in enumerate(keyword, start=1):
        cand.score, cand.keyword_rank = keyword_weight / (k + rank), rank
        fused[cand.chunk_id] = cand
    for rank, cand in enumerate(semantic, start=1):
        entry = fused.get(cand.chunk_id)
        if entry is None:
            cand.score, cand.semantic_rank = semantic_weight / (k + rank), rank
            fused[cand.chunk_id] = cand
        else:
            entry.score += semantic_weight / (k + rank)
            entry.semantic_rank = rank
    return sorted(fused.values(), key=lambda c: (-c.score, c.chunk_id))


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
) -> SearchResponse:
    """Search chunks. Raises SearchUnavailable only in semantic mode; hybrid degrades."""
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
        )

    grouped = _group(ranked, per_doc)
    results, gone = _page(grouped, query, offset=offset, limit=limit, with_snippets=with_snippets)
    count = len(grouped) - gone
    return SearchResponse(
        query=query,
        mode=mode,
        count=count,
        results=results,
        took_ms=round((time.perf_counter() - started) * 1000, 2),
        warnings=warnings,
    )


_executor: ThreadPoolExecutor | None = None
_executor_pid = 0
_executor_lock = threading.Lock()


def _semantic_executor() -> ThreadPoolExecutor:
    """A process-wide pool for the semantic half of hybrid searches (re-created after a fork)."""
    global _executor, _executor_pid
    with _executor_lock:
        if _executor is None or _executor_pid != os.getpid():
            workers = int(getattr(settings, "SEARCH_SEMANTIC_THREADS", 8))
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
